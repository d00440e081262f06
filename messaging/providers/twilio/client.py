"""Twilio through the official client: one client per thread, pooled connections, strict timeouts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProxyError

from audience.models import Channel
from messaging.providers.base import CountryPrice, ErrorKind, MessagePrice, ProviderError, SendRequest, SendResult
from messaging.providers.twilio.codes import error_kind, throttle_codes
from messaging.providers.twilio.http import PooledHttpClient, written

# Clock skew tolerated between our claim timestamp and Twilio's date_created when reconciling.
RECONCILE_SKEW = timedelta(seconds=30)
# A rate limit at the REST API: never processed (63018 is a delivery failure, reported later).
THROTTLE_CODES = frozenset(code for code in throttle_codes() if error_kind(code) == ErrorKind.RETRYABLE)


def whatsapp_address(address: str) -> str:
    return address if address.lower().startswith("whatsapp:") else f"whatsapp:{address}"


class TwilioProvider:
    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, base_url: str | None, timeouts: tuple[float, float]):
        self.client = Client(account_sid, auth_token, http_client=PooledHttpClient(*timeouts))
        # Only the host changes; edge/region would rewrite it (and may come from TWILIO_EDGE/TWILIO_REGION).
        self.client.edge = None
        self.client.region = None
        if base_url:  # the fake server answers both the REST API and the Pricing API
            self.client.api.base_url = base_url.rstrip("/")
            self.client.pricing.base_url = base_url.rstrip("/")

    # --- sending ---------------------------------------------------------------------------

    def send(self, request: SendRequest, on_sent: Callable[[], None] | None = None) -> SendResult:
        written.hook = on_sent
        try:
            instance = self.client.messages.create(**self.create_params(request))
        except (TwilioRestException, TwilioServiceException) as exc:
            raise classify_rest_error(exc) from exc
        except HTTPError as exc:
            raise classify_network_error(exc) from exc
        except TwilioException as exc:  # e.g. an unreadable 2xx answer: the message may exist
            raise ProviderError(ErrorKind.RETRYABLE, "", str(exc), accepted_unknown=True) from exc
        finally:
            written.hook = None
        return _result(instance)

    @staticmethod
    def create_params(request: SendRequest) -> dict[str, str]:
        whatsapp = request.channel == Channel.WHATSAPP
        params = {"to": whatsapp_address(request.to) if whatsapp else request.to}
        if request.messaging_service_sid:
            params["messaging_service_sid"] = request.messaging_service_sid
        if request.from_:
            params["from_"] = whatsapp_address(request.from_) if whatsapp else request.from_
        if request.content_sid:  # an approved template: never a Body next to it
            params["content_sid"] = request.content_sid
            params["content_variables"] = json.dumps(request.content_variables, separators=(",", ":"))
        else:
            params["body"] = request.body
        if request.status_callback:
            params["status_callback"] = request.status_callback
        return params

    # --- reconciliation --------------------------------------------------------------------

    def find(self, request: SendRequest, since: datetime) -> list[SendResult]:
        """Messages to the same recipient (and sender/body when known) created since ``since``.

        Twilio lists newest first; reading stops at the first older message. DateSent is not
        used as a filter: a message still queued at Twilio has no date_sent yet.
        """
        params = self.create_params(request)
        filters = {"to": params["to"]}
        if "from_" in params:
            filters["from_"] = params["from_"]
        try:
            found = []
            for instance in self.client.messages.stream(**filters, page_size=50):
                if instance.date_created and instance.date_created < since - RECONCILE_SKEW:
                    break
                if request.content_sid or (instance.body or "") == request.body:
                    found.append(_result(instance))
            return found
        except (TwilioRestException, TwilioServiceException) as exc:
            raise classify_rest_error(exc) from exc
        except (HTTPError, TwilioException) as exc:
            raise ProviderError(ErrorKind.RETRYABLE, "", f"lookup failed: {exc}") from exc

    # --- prices ----------------------------------------------------------------------------

    def message_price(self, sid: str) -> MessagePrice:
        """Twilio fills a message's price in after it is final; until then ``price`` is null."""
        try:
            instance = self.client.messages(sid).fetch()
        except (TwilioRestException, TwilioServiceException) as exc:
            raise classify_rest_error(exc) from exc
        except (HTTPError, TwilioException) as exc:
            raise ProviderError(ErrorKind.RETRYABLE, "network", f"price lookup failed: {exc}") from exc
        price = _decimal(instance.price)
        return MessagePrice(
            price=abs(price) if price is not None else None,  # Twilio reports prices as negative amounts
            currency=(instance.price_unit or "").upper() if price is not None else "",
            status=str(instance.status or ""),
        )

    def prices_for_country(self, country: str) -> list[CountryPrice]:
        """Outbound SMS to ``country`` from a long code, from the Pricing API (v1 Messaging Countries).

        Twilio lists a price per carrier (MCC/MNC) and sending number type; the estimate takes the
        highest long-code price, so it errs on the side of more. The Pricing API has no WhatsApp
        prices (Meta's fees per template category and Twilio's per-message fee): those come by CSV.
        """
        try:
            instance = self.client.pricing.v1.messaging.countries(country.upper()).fetch()
        except (TwilioRestException, TwilioServiceException) as exc:
            if int(exc.status or 0) == 404:  # Twilio does not serve that country
                return []
            raise classify_rest_error(exc) from exc
        except (HTTPError, TwilioException) as exc:
            raise ProviderError(ErrorKind.RETRYABLE, "network", f"pricing lookup failed: {exc}") from exc
        prices = [
            price
            for carrier in instance.outbound_sms_prices or []
            for entry in (carrier.get("prices") or [])
            if entry.get("number_type") in LONG_CODE_NUMBER_TYPES
            and (price := _decimal(entry.get("current_price") or entry.get("base_price"))) is not None
        ]
        if not prices:
            return []
        currency = (instance.price_unit or "USD").upper()
        return [CountryPrice(country=country.upper(), channel=Channel.SMS, price=max(prices), currency=currency)]


# The number types of the Pricing API's outbound SMS prices that a long-code sender pays.
LONG_CODE_NUMBER_TYPES = frozenset({"local", "mobile"})


def _decimal(value) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def _result(instance) -> SendResult:
    price = _decimal(instance.price)
    segments = int(instance.num_segments) if str(instance.num_segments or "").isdigit() else None
    return SendResult(
        provider_sid=instance.sid,
        status=str(instance.status or "queued"),
        segments=segments,
        price=abs(price) if price is not None else None,  # Twilio reports prices as negative amounts
        price_unit=instance.price_unit or "",
        created_at=instance.date_created,
        body=instance.body or "",
    )


def classify_rest_error(exc: TwilioRestException | TwilioServiceException) -> ProviderError:
    """429/20429 and 5xx were not processed: retry. The code's kind says the rest (``codes.ERRORS``)."""
    code = str(exc.code or "")
    status = int(exc.status or 0)
    message = str(getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", ""))[:500]
    if status == 429 or code in THROTTLE_CODES:
        return ProviderError(ErrorKind.RETRYABLE, code or str(status), message, throttled=True)
    if status >= 500:
        return ProviderError(ErrorKind.RETRYABLE, code or str(status), message)
    return ProviderError(error_kind(code), code or str(status), message)


def classify_network_error(exc: HTTPError) -> ProviderError:
    """Before the request left (no connection, proxy refused): retry. After (read timeout, reset): unknown.

    A TLS error is unknown too: urllib3 raises SSLError for a failed handshake, but also for a
    connection broken while the request was written or the answer read (an unexpected EOF), when
    Twilio may have created the message. Reconciliation looks before anything is sent again.
    """
    if isinstance(exc, ConnectTimeoutError | ProxyError):  # NewConnectionError is a ConnectTimeoutError
        return ProviderError(ErrorKind.RETRYABLE, "network", f"could not connect: {exc}")
    return ProviderError(ErrorKind.RETRYABLE, "network", f"no answer: {exc}", accepted_unknown=True)


_local = threading.local()


def twilio_provider() -> TwilioProvider:
    """This thread's provider for the current settings (a new one only if the settings changed).

    One client, and so one requests session and its kept-alive connections, per thread: the
    batched send path calls Twilio from a pool of threads, and a session is not meant to be
    shared between threads.
    """
    key = (
        settings.TWILIO_ACCOUNT_SID,
        settings.TWILIO_AUTH_TOKEN,
        settings.TWILIO_API_BASE_URL,
        (settings.TWILIO_CONNECT_TIMEOUT, settings.TWILIO_READ_TIMEOUT),
    )
    cached = getattr(_local, "provider", None)
    if cached is None or cached[0] != key:
        cached = (key, TwilioProvider(*key))
        _local.provider = cached
    return cached[1]
