"""The fake Twilio's HTTP/1.1 front: one asyncio loop on a thread of its own.

A sender at real latencies keeps hundreds of requests in flight, each held for its latency: a
thread per connection (``http.server``) spent more CPU handing the GIL around than answering,
on the same cores as the platform being measured. Here a held request is a sleeping coroutine.
Keep-alive, with TCP_NODELAY on every accepted socket: without it each request waits about
40 ms on delayed ACKs and every figure measured against the server is wrong.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from tests.fake_twilio.server import FakeTwilio

MAX_HEADER_BYTES = 64 * 1024


class _Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes, arrived: float):
        self.method = method
        parts = urlsplit(target)
        self.path = parts.path
        self.query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.headers = headers
        self.body = body
        self.arrived = arrived

    def form(self) -> dict[str, str]:
        return {key: values[-1] for key, values in parse_qs(self.body.decode(), keep_blank_values=True).items()}


class HttpFront:
    """Serves ``fake`` on (host, port) until ``stop``; ``address`` is where it listens."""

    def __init__(self, fake: FakeTwilio, host: str, port: int):
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self._socket = socket.create_server((host, port), backlog=1024, reuse_port=False)
        self.address = self._socket.getsockname()[:2]
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="fake-twilio", daemon=True)
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        if self._stopped is not None:
            self.loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, sock=self._socket, limit=MAX_HEADER_BYTES)
        self._ready.set()
        await self._stopped.wait()
        self._server.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}), return_exceptions=True)

    async def stall(self, seconds: float) -> None:
        """Hold an answer, cut short by ``stop``."""
        assert self._stopped is not None
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)
        except TimeoutError:
            pass

    # --- connections -----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request = await self._read(reader)
                if request is None:
                    return
                status, body = await self._answer(request)
                data = json.dumps(body).encode()
                reason = HTTPStatus(status).phrase
                head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
                head += f"Content-Length: {len(data)}\r\n\r\n"
                writer.write(head.encode() + data)
                await writer.drain()
                if request.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return  # a client killed mid-request is no news, and Twilio never sees half a request
        finally:
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> _Request | None:
        """The next request on the connection; None when the client closed it or sent half a request."""
        line = await reader.readline()
        if not line:
            return None
        arrived = time.time()
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        return _Request(method, target, headers, body, arrived)

    # --- routes ----------------------------------------------------------------------------

    async def _answer(self, request: _Request) -> tuple[int, dict]:
        from tests.fake_twilio.server import MESSAGE_RE, MESSAGES_RE, PRICING_RE, error_body

        fake = self.fake
        if request.path.startswith("/_fake/"):
            return self._control(request)
        if (pricing := PRICING_RE.match(request.path)) and request.method == "GET":
            if not fake.authorized(request.headers.get("authorization"), fake.account_sid):
                return 401, error_body(401, 20003, "Authenticate")
            return fake.pricing_country(pricing["iso"])
        match = MESSAGES_RE.match(request.path) or (MESSAGE_RE.match(request.path) if request.method == "GET" else None)
        if not match or request.method not in ("GET", "POST"):
            return 404, error_body(404, 20404, "The requested resource was not found")
        if not fake.authorized(request.headers.get("authorization"), match["account"]):
            return 401, error_body(401, 20003, "Authenticate")
        if request.method == "GET":
            with fake.answering():  # a lookup takes the API's latency too
                delay = fake.latency_draw(record=False)
                if delay:
                    await asyncio.sleep(delay)
            if "sid" not in match.groupdict():
                return 200, fake.list_messages(request.query)
            return fake.fetch_message(match["sid"], request.arrived)
        with fake.answering():
            delay = fake.latency_draw()
            if delay:
                await asyncio.sleep(delay)
            status, body, stall = fake.create_message(request.form(), request.arrived)
            if stall:
                await self.stall(fake.timeout_sleep)
        return status, body

    def _control(self, request: _Request) -> tuple[int, dict]:
        fake = self.fake
        if request.method == "GET" and request.path == "/_fake/stats":
            return 200, fake.stats()
        form = request.form()
        if request.method != "POST":
            return 404, {"error": "unknown control"}
        if request.path == "/_fake/reset":
            fake.reset()
        elif request.path == "/_fake/fail":
            try:
                fake.fail(form["to"], form["error"], int(form.get("times") or 1))
            except (KeyError, ValueError) as exc:
                return 400, {"error": str(exc)}
        elif request.path == "/_fake/config":
            try:
                for name, cast in (("latency", float), ("error_rate", float), ("error_kind", str)):
                    if name in form:
                        setattr(fake, name, cast(form[name]))
            except ValueError as exc:
                return 400, {"error": str(exc)}
        else:
            return 404, {"error": "unknown control"}
        return 200, fake.stats()
