"""The one base webhook view: verify, parse into an event, hand it to a service.

A provider subclass says how to verify and parse; a view per kind of callback
says which service to call. Refusals are decided before anything is stored: a
request that fails verification gets 403, one that cannot be parsed 400, so no
half-written row and no 500 comes from bad input.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseForbidden
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from config import observe

logger = logging.getLogger("messaging.webhooks")


class WebhookRefused(Exception):
    """Verification failed (no secret configured, missing or wrong signature): 403."""


class MalformedWebhook(Exception):
    """The payload is not one we accept (missing field, unknown status, too large): 400."""


@method_decorator(csrf_exempt, name="dispatch")
class WebhookView(View):
    http_method_names = ["post"]
    max_body_bytes = 64 * 1024  # provider callbacks are a few hundred bytes

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Counted and timed here, not in middleware: the status webhook's fast path skips middleware.
        started, outcome = time.perf_counter(), "error"
        try:
            try:
                self.verify(request)
                event = self.parse(request)
            except WebhookRefused as exc:
                outcome = "refused"
                logger.warning("webhook %s refused: %s", request.path, exc)
                observe.signature_failure_count()
                return HttpResponseForbidden()
            except MalformedWebhook as exc:
                outcome = "malformed"
                logger.warning("webhook %s malformed: %s", request.path, exc)
                return HttpResponseBadRequest(str(exc), content_type="text/plain")
            response = self.handle(request, event)
            outcome = "accepted"
            return response
        finally:
            observe.webhook_observe(type(self).__name__, outcome, time.perf_counter() - started)

    def body_size_check(self, request: HttpRequest) -> None:
        """Refuse an oversized body from its Content-Length, before reading it."""
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise MalformedWebhook("invalid Content-Length") from None
        if length > self.max_body_bytes:
            raise MalformedWebhook(f"body larger than {self.max_body_bytes} bytes")
        if len(request.body) > self.max_body_bytes:  # chunked bodies have no Content-Length
            raise MalformedWebhook(f"body larger than {self.max_body_bytes} bytes")

    def verify(self, request: HttpRequest) -> None:
        raise NotImplementedError

    def parse(self, request: HttpRequest) -> Any:
        raise NotImplementedError

    def handle(self, request: HttpRequest, event: Any) -> HttpResponse:
        raise NotImplementedError
