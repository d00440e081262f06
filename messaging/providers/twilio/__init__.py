"""Twilio through the official client: one client per process, pooled connections, strict timeouts."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3
import urllib3.connection
from django.conf import settings
from requests.utils import get_environ_proxies
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProxyError

from audience.models import Channel
from messaging.providers.base import ErrorKind, ProviderError, SendRequest, SendResult

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.05  # seconds to open a connection: nothing was sent if it fails
READ_TIMEOUT = 10.0  # seconds to wait for Twilio's answer: past it the outcome is unknown
POOL_SIZE = 4  # connections kept per thread (each thread has its own client)
# Clock skew tolerated between our claim timestamp and Twilio's date_created when reconciling.
RECONCILE_SKEW = timedelta(seconds=30)

THROTTLED_CODES = {"20429"}  # too many concurrent requests: never processed
OPTED_OUT_CODES = {"21610"}
OUTSIDE_WINDOW_CODES = {"63016"}


_written = threading.local()  # this thread's on_sent for the request being made


def _request_written() -> None:
    hook = getattr(_written, "hook", None)
    if hook is not None:
        _written.hook = None
        hook()


class _HTTPConnection(urllib3.connection.HTTPConnection):
    """Tells the thread's hook when the request has been written, before the answer is read."""

    def request(self, *args, **kwargs):
        super().request(*args, **kwargs)
        _request_written()


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args, **kwargs):
        super().request(*args, **kwargs)
        _request_written()


class _HTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class PooledHttpClient(HttpClient):
    """The twilio client's HTTP layer on urllib3 directly: kept-alive connections, separate
    connect/read timeouts, no retries, no redirects.

    requests' session machinery (merging environment settings, hooks, cookie jars, the CA
    bundle check) cost about a third of the client's CPU per send; urllib3 is what requests
    sends through anyway. The environment's proxies and CA bundle are read once per host (the
    proxy variables, NO_PROXY honoured) and once per client. Network errors come out as
    urllib3's exceptions; ``classify_network_error`` tells a request that never left from one
    whose outcome is unknown.
    """

    def __init__(self, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT):
        # The library logs ~10 INFO lines per request; ours stays quiet unless LOGGING asks for it.
        http_logger = logging.getLogger("messaging.providers.twilio.http")
        if http_logger.level == logging.NOTSET:
            http_logger.setLevel(logging.WARNING)
        super().__init__(http_logger, False, read_timeout)
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self.ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
        self._managers: dict[tuple[str, str], urllib3.PoolManager] = {}

    def _timeout(self, read: float | None) -> urllib3.Timeout:
        return self.timeout if read is None else urllib3.Timeout(connect=self.timeout.connect_timeout, read=read)

    def _manager(self, url: str) -> urllib3.PoolManager:
        origin = tuple(urlsplit(url)[:2])
        manager = self._managers.get(origin)
        if manager is None:  # the environment's proxy for this host, read once
            options = {"num_pools": 4, "maxsize": POOL_SIZE, "ca_certs": self.ca_certs, "retries": False}
            proxies = get_environ_proxies(url)
            proxy = proxies.get(origin[0]) or proxies.get("all")
            manager = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
            manager.pool_classes_by_scheme = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}
            self._managers[origin] = manager
        return manager

    def request(
        self,
        method: str,
        url: str,
        params: dict | None = None,
        data: dict | None = None,
        headers: dict | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        headers = dict(headers or {})
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{_form(params)}"
        body = None
        if data is not None:
            if headers.get("Content-Type") in ("application/json", "application/scim+json"):
                body = json.dumps(data).encode()
            else:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                body = _form(data).encode()
        self.log_request({"method": method.upper(), "url": url, "params": None, "headers": headers})
        answer = self._manager(url).request(
            method.upper(),
            url,
            body=body,
            headers=headers,
            timeout=self._timeout(timeout),
            redirect=allow_redirects,
            retries=False,
            preload_content=True,
        )
        response = Response(answer.status, answer.data.decode("utf-8", "replace"), answer.headers)
        self.logger.info("Response Status Code: %s", answer.status)
        self._test_only_last_response = response
        return response


def _form(values: dict) -> str:
    """Form-encode like requests: lists repeat their key, None is left out."""
    pairs = []
    for key, value in values.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None:
                pairs.append((key, item))
    return urlencode(pairs)


def whatsapp_address(address: str) -> str:
    return address if address.lower().startswith("whatsapp:") else f"whatsapp:{address}"


class TwilioProvider:
    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, base_url: str | None, timeouts: tuple[float, float]):
        self.client = Client(account_sid, auth_token, http_client=PooledHttpClient(*timeouts))
        # Only the host changes; edge/region would rewrite it (and may come from TWILIO_EDGE/TWILIO_REGION).
        self.client.edge = None
        self.client.region = None
        if base_url:
            self.client.api.base_url = base_url.rstrip("/")

    # --- sending ---------------------------------------------------------------------------

    def send(self, request: SendRequest, on_sent: Callable[[], None] | None = None) -> SendResult:
        _written.hook = on_sent
        try:
            instance = self.client.messages.create(**self.create_params(request))
        except (TwilioRestException, TwilioServiceException) as exc:
            raise classify_rest_error(exc) from exc
        except HTTPError as exc:
            raise classify_network_error(exc) from exc
        except TwilioException as exc:  # e.g. an unreadable 2xx answer: the message may exist
            raise ProviderError(ErrorKind.RETRYABLE, "", str(exc), accepted_unknown=True) from exc
        finally:
            _written.hook = None
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


def _result(instance) -> SendResult:
    try:
        price = Decimal(str(instance.price)) if instance.price not in (None, "") else None
    except InvalidOperation:
        price = None
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
    """429/20429 and 5xx were not processed: retry. 21610 and 63016 have their own handling."""
    code = str(exc.code or "")
    status = int(exc.status or 0)
    message = str(getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", ""))[:500]
    if status == 429 or code in THROTTLED_CODES:
        return ProviderError(ErrorKind.RETRYABLE, code or str(status), message, throttled=True)
    if status >= 500:
        return ProviderError(ErrorKind.RETRYABLE, code or str(status), message)
    if code in OPTED_OUT_CODES:
        return ProviderError(ErrorKind.OPTED_OUT, code, message)
    if code in OUTSIDE_WINDOW_CODES:
        return ProviderError(ErrorKind.OUTSIDE_WINDOW, code, message)
    return ProviderError(ErrorKind.PERMANENT, code or str(status), message)


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
