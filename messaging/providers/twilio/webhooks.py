"""Twilio webhooks: signature verification, parsing into one event type, and the two views.

The signed URL is rebuilt from settings.PUBLIC_BASE_URL and the request path,
never from the Host or X-Forwarded-* headers a client controls. Form-encoded
callbacks are signed over URL + sorted parameters; the JSON variant carries
``bodySHA256`` in its query string and is signed over the URL alone, the hash
binding the body (RequestValidator checks both when given the raw body).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from twilio.request_validator import (
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from config.json_limits import DepthLimitedJSONDecoder
from messaging.keywords import Keyword, keyword_parse
from messaging.providers.twilio.codes import STATUSES
from messaging.services.inbound import inbound_message_record
from messaging.services.status import status_callback_record
from messaging.webhooks.base import MalformedWebhook, WebhookRefused, WebhookView, logger

SIGNATURE_SETTINGS_META = "HTTP_" + SIGNATURE_SETTINGS_HEADER.upper().replace("-", "_")
SID_PATTERN = re.compile(r"[A-Za-z]{2}[A-Za-z0-9]{8,62}")
ERROR_CODE_PATTERN = re.compile(r"\d{1,16}")
BODY_SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
MAX_FIELDS = 100
MAX_FIELD_CHARS = 2048
MAX_BODY_CHARS = 10_000  # Twilio caps SMS at 1,600 characters and WhatsApp text at 4,096
MAX_ADDRESS_CHARS = 64


@dataclass(frozen=True)
class TwilioEvent:
    """A status callback or an inbound message, normalised; ``payload`` is what Twilio sent."""

    provider_sid: str
    status: str
    error_code: str
    from_address: str
    to_address: str
    body: str
    payload: dict[str, Any]


def public_url(request: HttpRequest) -> str:
    return settings.PUBLIC_BASE_URL + request.get_full_path()


class TwilioWebhookView(WebhookView):
    def verify(self, request: HttpRequest) -> None:
        token = settings.TWILIO_AUTH_TOKEN
        if not token:
            logger.error(
                "TWILIO_AUTH_TOKEN is not set: refusing every Twilio webhook (%s). "
                "Set it to the account's auth token to accept callbacks.",
                request.path,
            )
            raise WebhookRefused("TWILIO_AUTH_TOKEN is not configured")
        signature = request.META.get("HTTP_X_TWILIO_SIGNATURE", "")
        if not signature:
            raise WebhookRefused("no X-Twilio-Signature header")
        self.body_size_check(request)
        if self._is_json(request):
            if not BODY_SHA256_PATTERN.fullmatch(request.GET.get("bodySHA256", "")):
                raise WebhookRefused("bodySHA256 is not a SHA-256 hex digest")  # twilio's validator would crash
            signed = request.body.decode("utf-8", "replace")
        elif request.content_type != "application/x-www-form-urlencoded":
            raise MalformedWebhook(f"expected application/x-www-form-urlencoded, got {request.content_type or 'none'}")
        else:
            signed = self._form = self._form_params(request)
        algorithm = get_signature_algorithm(request.META.get(SIGNATURE_SETTINGS_META))
        if not RequestValidator(token).validate(public_url(request), signed, signature, algorithm):
            raise WebhookRefused("invalid X-Twilio-Signature")

    def parse(self, request: HttpRequest) -> TwilioEvent:
        params = self._json_params(request) if self._is_json(request) else self._form
        if len(params) > MAX_FIELDS:
            raise MalformedWebhook(f"more than {MAX_FIELDS} fields")
        sid = _field(params, "MessageSid", "SmsSid")
        if not sid or not SID_PATTERN.fullmatch(sid):
            raise MalformedWebhook("MessageSid is missing or not a message SID")
        event = TwilioEvent(
            provider_sid=sid,
            status=_field(params, "MessageStatus", "SmsStatus").lower(),
            error_code=_field(params, "ErrorCode"),
            from_address=_field(params, "From", limit=MAX_ADDRESS_CHARS),
            to_address=_field(params, "To", limit=MAX_ADDRESS_CHARS),
            body=_field(params, "Body", limit=MAX_BODY_CHARS),
            payload=params,
        )
        too_long = [k for k, v in params.items() if k != "Body" and isinstance(v, str) and len(v) > MAX_FIELD_CHARS]
        if too_long:
            raise MalformedWebhook(f"{too_long[0]} is longer than {MAX_FIELD_CHARS} characters")
        if event.error_code and not ERROR_CODE_PATTERN.fullmatch(event.error_code):
            raise MalformedWebhook("ErrorCode is not a number")
        if _holds_nul(params):  # PostgreSQL stores no NUL in text or jsonb: refuse, not a 500
            raise MalformedWebhook("a field holds a NUL character")
        self.check(event)
        return event

    def check(self, event: TwilioEvent) -> None:
        """Checks particular to one kind of callback; raise MalformedWebhook."""

    @staticmethod
    def _is_json(request: HttpRequest) -> bool:
        # The raw query string, not request.GET: this runs on every status callback.
        query = request.META.get("QUERY_STRING", "")
        return "bodySHA256" in query and "bodySHA256" in request.GET

    @staticmethod
    def _form_params(request: HttpRequest) -> dict[str, str]:
        """The form fields as a plain dict (cheaper than a QueryDict on the hot path).

        Twilio sends each field once; were one repeated, the last value is kept and the signature,
        computed by Twilio over every value, no longer matches: the request is refused.
        """
        try:
            return dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS))
        except (UnicodeDecodeError, ValueError):
            raise MalformedWebhook("body is not a form-encoded UTF-8 text") from None

    @staticmethod
    def _json_params(request: HttpRequest) -> dict[str, Any]:
        try:
            params = json.loads(request.body, cls=DepthLimitedJSONDecoder)
        except json.JSONDecodeError as exc:  # among them a body nested too deep, with where
            raise MalformedWebhook(f"body is not JSON: {exc}") from None
        except (ValueError, UnicodeDecodeError):
            raise MalformedWebhook("body is not JSON") from None
        if not isinstance(params, dict):
            raise MalformedWebhook("JSON body is not an object")
        return params


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _field(params: dict[str, Any], *names: str, limit: int = MAX_FIELD_CHARS) -> str:
    """The first of ``names`` present, as text; numbers are accepted from JSON bodies."""
    for name in names:
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise MalformedWebhook(f"{name} is not text")
        value = str(value)
        if len(value) > limit:
            raise MalformedWebhook(f"{name} is longer than {limit} characters")
        return value
    return ""


TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def twiml_response(text: str = "") -> HttpResponse:
    if not text:
        return HttpResponse(TWIML_EMPTY, content_type="text/xml")
    body = f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(text)}</Message></Response>'
    return HttpResponse(body, content_type="text/xml")


class TwilioStatusView(TwilioWebhookView):
    """The hot path: one statement stores the event and moves the message."""

    def check(self, event: TwilioEvent) -> None:
        if event.status not in STATUSES:
            raise MalformedWebhook(f"MessageStatus {event.status!r} is missing or unknown")

    def handle(self, request: HttpRequest, event: TwilioEvent) -> HttpResponse:
        status_callback_record(
            provider_sid=event.provider_sid, status=event.status, error_code=event.error_code, payload=event.payload
        )
        return HttpResponse(status=200)


class TwilioInboundView(TwilioWebhookView):
    """Store the message and act on keywords; reply with TwiML (empty, or the help text)."""

    def check(self, event: TwilioEvent) -> None:
        if not event.from_address:
            raise MalformedWebhook("From is missing")

    def handle(self, request: HttpRequest, event: TwilioEvent) -> HttpResponse:
        inbound_message_record(
            provider_sid=event.provider_sid,
            from_address=event.from_address,
            to_address=event.to_address,
            body=event.body,
            payload=event.payload,
        )
        found = keyword_parse(event.body)
        # Replies are a function of the text alone, so a replayed HELP gets the same answer.
        if found and found[0] == Keyword.HELP:
            return twiml_response(settings.HELP_REPLY_TEXT)
        return twiml_response()
