"""Twilio's status callback and inbound message webhooks."""

from __future__ import annotations

from xml.sax.saxutils import escape

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from messaging.keywords import Keyword, keyword_parse
from messaging.services.inbound import inbound_message_record
from messaging.services.status import TWILIO_STATUSES, status_event_record
from messaging.webhooks.base import MalformedWebhook
from messaging.webhooks.twilio import TwilioEvent, TwilioWebhookView

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def twiml_response(text: str = "") -> HttpResponse:
    if not text:
        return HttpResponse(TWIML_EMPTY, content_type="text/xml")
    body = f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(text)}</Message></Response>'
    return HttpResponse(body, content_type="text/xml")


class TwilioStatusView(TwilioWebhookView):
    """The hot path: one statement stores the event and moves the message."""

    def check(self, event: TwilioEvent) -> None:
        if event.status not in TWILIO_STATUSES:
            raise MalformedWebhook(f"MessageStatus {event.status!r} is missing or unknown")

    def handle(self, request: HttpRequest, event: TwilioEvent) -> HttpResponse:
        status_event_record(
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
