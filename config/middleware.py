"""Request id and request timing, for every request that goes through Django's middleware.

(The status webhook's fast path, config.fast_path, skips middleware; its view counts and times
itself. The API's fast doors keep these two.)
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from config import observe
from config.logging import context_reset, context_set

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept when it is short and plain (a UUID, a load balancer's trace id); anything
# else is replaced, so a header cannot inject text into the logs.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id_for(request: HttpRequest) -> str:
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    return given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    """Takes X-Request-ID if sane, else makes one; puts it in the log context and the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = request_id_for(request)
        token = context_set(request_id=request.request_id)
        try:
            response = self.get_response(request)
        finally:
            context_reset(token)
        response[REQUEST_ID_HEADER] = request.request_id
        return response


class RequestMetricsMiddleware:
    """Latency histogram per view (the URL pattern's name, never the raw path), method and status class."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or match.route) if match else "unmatched"
        if view != "metrics":  # scrapes would only measure themselves
            method = request.method if request.method in KNOWN_METHODS else "other"
            labels = (view, method, f"{response.status_code // 100}xx")
            observe.histogram_observe("http_request_duration_seconds", labels, time.perf_counter() - started)
        return response
