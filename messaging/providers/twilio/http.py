"""The twilio client's HTTP layer on urllib3: kept-alive connections, strict timeouts, a written-request hook."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3
import urllib3.connection
from requests.utils import get_environ_proxies
from twilio.http import HttpClient
from twilio.http.response import Response

CONNECT_TIMEOUT = 3.05  # seconds to open a connection: nothing was sent if it fails
READ_TIMEOUT = 10.0  # seconds to wait for Twilio's answer: past it the outcome is unknown
POOL_SIZE = 4  # connections kept per thread (each thread has its own client)

written = threading.local()  # this thread's on_sent for the request being made


def _request_written() -> None:
    hook = getattr(written, "hook", None)
    if hook is not None:
        written.hook = None
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
