"""A fake Twilio Messages API for tests and benchmarks, driven through the real ``twilio`` client.

It answers ``POST/GET /2010-04-01/Accounts/{sid}/Messages.json`` and ``GET .../Messages/{sid}.json``
like Twilio, with a latency drawn from a model (``latency.Latency``: fixed, or log-normal with rare
stalls like the real API) and injected errors (by rate or by recipient), counts
requests per recipient, and posts correctly signed status callbacks back to each message's
StatusCallback, optionally out of order and duplicated.

HTTP/1.1 keep-alive on an asyncio loop (``http.HttpFront``), TCP_NODELAY on every socket.

    with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        settings.TWILIO_API_BASE_URL = fake.base_url
        fake.fail("+254700000001", "21610")
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import queue
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import urlencode

import requests
from twilio.request_validator import RequestValidator

from tests.fake_twilio import prices
from tests.fake_twilio.http import HttpFront
from tests.fake_twilio.latency import Latency

API = "/2010-04-01"
MESSAGES_RE = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-fA-F]{32})/Messages\.json$")
MESSAGE_RE = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-fA-F]{32})/Messages/(?P<sid>(SM|MM)[0-9a-f]{32})\.json$"
)
PRICING_RE = re.compile(r"^/v1/Messaging/Countries/(?P<iso>[A-Za-z]{2})$")
# Statuses after which Twilio fills the message's price in: once the carrier took the message ("sent"),
# whether or not a delivery receipt ever follows.
PRICED = frozenset({"sent", "delivered", "read", "undelivered", "failed"})
E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")
CONTENT_SID_RE = re.compile(r"^HX[0-9a-fA-F]{32}$")

# error name -> (HTTP status, Twilio code, message)
ERRORS: dict[str, tuple[int, int, str]] = {
    "429": (429, 20429, "Too Many Requests"),
    "500": (500, 20500, "Internal Server Error"),
    "503": (503, 20503, "Service Unavailable"),
    "21211": (400, 21211, "The 'To' number is not a valid phone number."),
    "21610": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "21614": (400, 21614, "'To' number is not a valid mobile number"),
    "63016": (
        400,
        63016,
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template.",
    ),
}
TIMEOUT = "timeout"  # create the message, then answer only after the client has given up


@dataclass
class Callback:
    url: str
    params: dict[str, str]


@dataclass
class _State:
    messages: dict[str, dict] = field(default_factory=dict)
    forms: dict[str, dict[str, str]] = field(default_factory=dict)  # sid -> the form that created it
    order: list[str] = field(default_factory=list)
    requests: int = 0
    by_recipient: Counter = field(default_factory=Counter)
    arrivals: list[float] = field(default_factory=list)  # epoch seconds each send request arrived
    latencies: list[float] = field(default_factory=list)  # seconds each send was held before its answer
    arrived_by_recipient: dict[str, float] = field(default_factory=dict)  # to -> when its last send arrived
    concurrent: int = 0  # send requests being answered right now
    max_concurrent: int = 0
    created_by_recipient: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)  # to -> errors still to inject
    outcomes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # to -> statuses to call back
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    callback_statuses: Counter = field(default_factory=Counter)
    manual_callbacks: list[Callback] = field(default_factory=list)
    fetches: Counter = field(default_factory=Counter)  # sid -> GET requests for that message
    fetch_arrivals: list[float] = field(default_factory=list)  # epoch seconds each message GET arrived
    fetch_failures: dict[str, list[str]] = field(default_factory=dict)  # sid -> errors still to inject
    unpriced: set[str] = field(default_factory=set)  # sids whose price stays null even once final
    pricing_requests: Counter = field(default_factory=Counter)  # ISO country -> Pricing API requests


class FakeTwilio:
    """The fake server; a context manager that binds a free port by default."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float | Latency = 0.0,
        timeout_sleep: float = 5.0,
        error_rate: float = 0.0,
        error_kind: str = "500",
        error_mix: dict[str, float] | None = None,
        callbacks: str = "thread",
        callback_statuses: tuple[str, ...] = ("sent", "delivered"),
        callback_delay: float = 0.0,
        out_of_order: bool = False,
        duplicates: bool = False,
        seed: int | None = None,
    ):
        if callbacks not in ("thread", "manual", "off"):
            raise ValueError("callbacks is 'thread', 'manual' or 'off'")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.latency = latency
        self.timeout_sleep = timeout_sleep
        self.error_rate = error_rate
        self.error_kind = error_kind
        # {error name: share of sends}, e.g. {"500": 0.1, "429": 0.05, "timeout": 0.02}; drawn
        # before error_rate. A "timeout" creates the message and answers after the client gave up.
        self.error_mix = dict(error_mix or {})
        for name in self.error_mix:
            if name != TIMEOUT and name not in ERRORS:
                raise ValueError(f"unknown error {name!r} in error_mix")
        self.callbacks = callbacks
        self.callback_statuses = callback_statuses
        self.callback_delay = callback_delay
        self.out_of_order = out_of_order
        self.duplicates = duplicates
        self._validator = RequestValidator(auth_token)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._state = _State()
        self._stopping = threading.Event()
        self._queue: queue.Queue[Callback | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._http = HttpFront(self, host, port)
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def latency(self) -> Latency:
        return self._latency

    @latency.setter
    def latency(self, value: float | Latency) -> None:
        self._latency = value if isinstance(value, Latency) else Latency.fixed(float(value))

    @contextlib.contextmanager
    def answering(self):
        """Counts the send requests being answered at once (a sender's requests in flight)."""
        with self._lock:
            state = self._state  # a reset meanwhile starts a new count
            state.concurrent += 1
            state.max_concurrent = max(state.max_concurrent, state.concurrent)
        try:
            yield
        finally:
            with self._lock:
                state.concurrent -= 1

    def latency_draw(self, *, record: bool = True) -> float:
        """How long to hold the next request (seconds); a send's is recorded for the figures."""
        with self._lock:
            seconds = self._latency.sample(self._rng)
            if record:
                self._state.latencies.append(seconds)
        return seconds

    @property
    def base_url(self) -> str:
        host, port = self._http.address
        return f"http://{host}:{port}"

    def start(self) -> FakeTwilio:
        self._http.start()
        if self.callbacks == "thread":
            worker = threading.Thread(target=self._callback_worker, name="fake-twilio-callbacks", daemon=True)
            worker.start()
            self._threads.append(worker)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        self._http.stop()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- test controls ---------------------------------------------------------------------

    def fail(self, to: str, error: str, times: int = 1) -> None:
        """The next ``times`` sends to ``to`` answer ``error`` (a key of ERRORS, or "timeout")."""
        if error != TIMEOUT and error not in ERRORS:
            raise ValueError(f"unknown error {error!r}; one of {', '.join([*ERRORS, TIMEOUT])}")
        with self._lock:
            self._state.failures.setdefault(to, []).extend([error] * times)

    def outcome(self, to: str, statuses: list[tuple[str, str]]) -> None:
        """Status callbacks for messages to ``to``: [(status, error_code), ...] instead of the default."""
        with self._lock:
            self._state.outcomes[to] = list(statuses)

    def settle(self, sid: str, status: str = "delivered", error_code: str = "") -> None:
        """Move message ``sid`` to ``status`` at the fake; a final status fills its price in, as Twilio does."""
        with self._lock:
            message = self._state.messages[sid]
            message["status"] = status
            if error_code:
                message["error_code"] = int(error_code)
            if status in PRICED and sid not in self._state.unpriced:
                message["price"] = prices.message_price(message["to"] or "", message["body"] or "")

    def withhold_price(self, sid: str) -> None:
        """Message ``sid`` keeps a null price even once final (a price Twilio is late to fill in)."""
        with self._lock:
            self._state.unpriced.add(sid)
            if sid in self._state.messages:
                self._state.messages[sid]["price"] = None

    def fail_fetch(self, sid: str, error: str, times: int = 1) -> None:
        """The next ``times`` GETs of message ``sid`` answer ``error`` (a key of ERRORS)."""
        if error not in ERRORS:
            raise ValueError(f"unknown error {error!r}; one of {', '.join(ERRORS)}")
        with self._lock:
            self._state.fetch_failures.setdefault(sid, []).extend([error] * times)

    def fetch_message(self, sid: str, arrived: float | None = None) -> tuple[int, dict]:
        """A GET of one message: counted, maybe refused as asked, else the message as it stands."""
        with self._lock:
            self._state.fetches[sid] += 1
            self._state.fetch_arrivals.append(arrived or time.time())
            queued = self._state.fetch_failures.get(sid)
            injected = queued.pop(0) if queued else None
            found = self._state.messages.get(sid)
        if injected:
            status, code, text = ERRORS[injected]
            return self._refuse(injected, status, code, text)[:2]
        if found is None:
            return 404, error_body(404, 20404, f"The requested resource /Messages/{sid}.json was not found")
        return 200, dict(found)

    def pricing_country(self, iso: str) -> tuple[int, dict]:
        with self._lock:
            self._state.pricing_requests[iso.upper()] += 1
        body = prices.pricing_country(iso, self.base_url)
        if body is None:
            return 404, error_body(404, 20404, f"The requested resource /v1/Messaging/Countries/{iso} was not found")
        return 200, body

    def fetches(self) -> dict[str, int]:
        """GET requests per message sid (price lookups and reconciliation alike)."""
        with self._lock:
            return dict(self._state.fetches)

    def fetch_arrival_times(self) -> list[float]:
        with self._lock:
            return list(self._state.fetch_arrivals)

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    def stats(self) -> dict:
        with self._lock:
            state = self._state
            return {
                "requests": state.requests,
                "created": len(state.messages),
                "by_recipient": dict(state.by_recipient),
                "created_by_recipient": dict(state.created_by_recipient),
                "errors": dict(state.errors),
                "callbacks_sent": state.callbacks_sent,
                "callbacks_failed": state.callbacks_failed,
                "callback_statuses": dict(state.callback_statuses),
                "callbacks_pending": self._pending + len(state.manual_callbacks),
                "max_concurrent": state.max_concurrent,
                "fetches": sum(state.fetches.values()),
                "pricing_requests": dict(state.pricing_requests),
            }

    def requests_to(self, to: str) -> int:
        with self._lock:
            return self._state.by_recipient.get(to, 0) + (
                self._state.by_recipient.get(f"whatsapp:{to}", 0) if not to.startswith("whatsapp:") else 0
            )

    def messages(self) -> list[dict]:
        with self._lock:
            return [dict(self._state.messages[sid]) for sid in self._state.order]

    def message(self, sid: str) -> dict | None:
        with self._lock:
            found = self._state.messages.get(sid)
            return dict(found) if found else None

    def request_form(self, sid: str) -> dict[str, str] | None:
        """The form fields the client posted to create message ``sid``."""
        with self._lock:
            found = self._state.forms.get(sid)
            return dict(found) if found else None

    def signature(self, url: str, params: dict[str, str]) -> str:
        return self._validator.compute_signature(url, params)

    def deliver_callbacks(self, post: Callable[[str, dict[str, str], str], int] | None = None) -> list[int]:
        """Manual mode: post every queued callback now, from this thread; returns the HTTP statuses."""
        with self._lock:
            pending, self._state.manual_callbacks = self._state.manual_callbacks, []
        return [self._post_callback(callback, post) for callback in pending]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Thread mode: wait until every scheduled callback was posted."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # --- request handling (called from handler threads) ------------------------------------

    def authorized(self, header: str | None, account: str) -> bool:
        if not header or not header.startswith("Basic ") or account != self.account_sid:
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.account_sid) and hmac.compare_digest(password, self.auth_token)

    def arrived_by_recipient(self) -> dict[str, float]:
        """When the last send to each recipient arrived (epoch seconds)."""
        with self._lock:
            return dict(self._state.arrived_by_recipient)

    def latencies(self) -> list[float]:
        """The latency each send was given, in arrival order."""
        with self._lock:
            return list(self._state.latencies)

    def arrival_times(self) -> list[float]:
        """When each send request arrived (epoch seconds, before the latency): pacing is measured here."""
        with self._lock:
            return list(self._state.arrivals)

    def create_message(self, form: dict[str, str], arrived: float | None = None) -> tuple[int, dict, bool]:
        """Returns (HTTP status, JSON body, whether to stall past the client's timeout)."""
        to = form.get("To", "")
        with self._lock:
            self._state.arrivals.append(arrived or time.time())
            self._state.arrived_by_recipient[to] = self._state.arrivals[-1]
            self._state.requests += 1
            self._state.by_recipient[to] += 1
            injected = self._injected(to)
        if injected and injected != TIMEOUT:
            status, code, message = ERRORS[injected]
            return self._refuse(injected, status, code, message)
        if injected == TIMEOUT:
            with self._lock:
                self._state.errors[TIMEOUT] += 1
        problem = form_problem(form)
        if problem:
            return self._refuse(str(problem[0]), 400, *problem)
        message = self._store(form)
        self._schedule_callbacks(message, form.get("StatusCallback", ""))
        return 201, message, injected == TIMEOUT

    def _injected(self, to: str) -> str | None:
        queued = self._state.failures.get(to)
        if queued:
            return queued.pop(0)
        if self.error_mix:
            draw = self._rng.random()
            for name, share in self.error_mix.items():
                if draw < share:
                    return name
                draw -= share
        if self.error_rate and self._rng.random() < self.error_rate:
            return self.error_kind
        return None

    def _refuse(self, name: str, status: int, code: int, message: str) -> tuple[int, dict, bool]:
        with self._lock:
            self._state.errors[name] += 1
        return status, error_body(status, code, message), False

    def _store(self, form: dict[str, str]) -> dict:
        sid = "SM" + uuid.uuid4().hex
        now = format_datetime(datetime.now(UTC))
        body = "" if form.get("ContentSid") else form.get("Body", "")  # Twilio would render the template
        message = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": now,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "num_media": "0",
            "num_segments": str(prices.segments_for(body)) if body else "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if form.get("MessagingServiceSid") and not form.get("From") else "queued",
            "subresource_uris": {"media": f"{API}/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
            "to": form.get("To"),
            "uri": f"{API}/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        with self._lock:
            self._state.messages[sid] = message
            self._state.forms[sid] = dict(form)
            self._state.order.append(sid)
            self._state.created_by_recipient[form.get("To", "")] += 1
        return message

    def list_messages(self, query: dict[str, str]) -> dict:
        page_size = min(int(query.get("PageSize") or 50), 1000)
        page = int(query.get("Page") or 0)
        with self._lock:
            rows = [self._state.messages[sid] for sid in reversed(self._state.order)]
        rows = [row for row in rows if _matches(row, query)]
        chunk = rows[page * page_size : (page + 1) * page_size]
        base = f"{API}/Accounts/{self.account_sid}/Messages.json"
        keep = {key: value for key, value in query.items() if key not in ("Page", "PageSize", "PageToken")}

        def uri(number: int) -> str:
            return f"{base}?{urlencode({**keep, 'PageSize': page_size, 'Page': number})}"

        has_next = (page + 1) * page_size < len(rows)
        return {
            "messages": chunk,
            "end": page * page_size + max(len(chunk) - 1, 0),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if has_next else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": uri(page - 1) if page else None,
            "start": page * page_size,
            "uri": uri(page),
        }

    # --- status callbacks ------------------------------------------------------------------

    def _schedule_callbacks(self, message: dict, url: str) -> None:
        if not url or self.callbacks == "off":
            return
        with self._lock:
            plan = list(self._state.outcomes.get(message["to"]) or [(status, "") for status in self.callback_statuses])
            if self.out_of_order:
                plan.reverse()
            callbacks = [Callback(url, _callback_params(message, status, code)) for status, code in plan]
            if self.duplicates:
                callbacks = [callback for callback in callbacks for _ in range(2)]
            if self.callbacks == "manual":
                self._state.manual_callbacks.extend(callbacks)
                return
            self._pending += len(callbacks)
        for callback in callbacks:
            self._queue.put(callback)

    def _callback_worker(self) -> None:
        session = requests.Session()
        while not self._stopping.is_set():
            callback = self._queue.get()
            if callback is None:
                return
            if self.callback_delay:
                self._stopping.wait(self.callback_delay)
            self._post_callback(callback, None, session)
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _post_callback(self, callback: Callback, post, session: requests.Session | None = None) -> int:
        sid, status = callback.params["MessageSid"], callback.params["MessageStatus"]
        if status in PRICED and sid in self._state.messages:  # Twilio's own record moves before it calls back
            self.settle(sid, status, callback.params.get("ErrorCode", ""))
        signature = self.signature(callback.url, callback.params)
        try:
            if post is not None:
                status = post(callback.url, callback.params, signature)
            else:
                response = (session or requests).post(
                    callback.url, data=callback.params, headers={"X-Twilio-Signature": signature}, timeout=15
                )
                status = response.status_code
        except requests.RequestException:
            status = 0
        with self._lock:
            ok = 200 <= status < 300
            self._state.callbacks_sent += ok
            self._state.callbacks_failed += not ok
            if ok:
                self._state.callback_statuses[callback.params["MessageStatus"]] += 1
        return status


def error_body(status: int, code: int, message: str) -> dict:
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    return {"code": code, "message": message, "more_info": more_info, "status": status}


def _address_ok(address: str) -> bool:
    return bool(E164_RE.match(address[len("whatsapp:") :] if address.startswith("whatsapp:") else address))


def form_problem(form: dict[str, str]) -> tuple[int, str] | None:
    """The Twilio error (code, message) this form would get, or None."""
    if not form.get("To"):
        return 21604, "A 'To' phone number is required."
    if not _address_ok(form["To"]):
        return 21211, f"The 'To' number {form['To']} is not a valid phone number."
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return 21603, "A 'From' phone number is required."
    if form.get("From") and not _address_ok(form["From"]) and not form["From"].isalnum():
        return 21212, "The 'From' number is not a valid phone number, shortcode, or alphanumeric sender ID."
    if form.get("ContentSid"):
        if not CONTENT_SID_RE.match(form["ContentSid"]):
            return 21655, "The ContentSid is Invalid."
        try:
            variables = json.loads(form.get("ContentVariables") or "{}")
        except ValueError:
            variables = None
        if not isinstance(variables, dict):
            return 21656, "The ContentVariables Parameter is invalid."
        if form.get("Body"):
            return 21619, "A text message body or media urls must be specified, not both Body and ContentSid."
    elif not form.get("Body") and not form.get("MediaUrl"):
        return 21602, "Message body is required."
    elif len(form.get("Body", "")) > 1600:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    if to_whatsapp(form.get("To", "")) != to_whatsapp(form.get("From", "") or form.get("To", "")):
        return 21910, "Invalid From and To pair. From and To should be of the same channel."
    return None


def to_whatsapp(address: str) -> bool:
    return address.startswith("whatsapp:")


def _callback_params(message: dict, status: str, error_code: str) -> dict[str, str]:
    params = {
        "AccountSid": message["account_sid"],
        "ApiVersion": "2010-04-01",
        "From": message["from"] or "",
        "MessageSid": message["sid"],
        "MessageStatus": status,
        "SmsSid": message["sid"],
        "SmsStatus": status,
        "To": message["to"],
    }
    if message["to"].startswith("whatsapp:"):
        params["ChannelPrefix"] = "whatsapp"
    if error_code:
        params["ErrorCode"] = error_code
    return params


def _matches(row: dict, query: dict[str, str]) -> bool:
    if query.get("To") and row["to"] != query["To"]:
        return False
    if query.get("From") and row["from"] != query["From"]:
        return False
    created = datetime.strptime(row["date_created"], "%a, %d %b %Y %H:%M:%S %z").date().isoformat()
    for key, test in (
        ("DateSent", lambda day: created == day),
        ("DateSent>", lambda day: created >= day),
        ("DateSent<", lambda day: created <= day),
    ):
        if query.get(key) and not test(query[key][:10]):
            return False
    return True
