"""A lean WSGI path for the status webhook, the platform's hottest endpoint.

Twilio posts a status callback for every step of every message, so at campaign
speed this one URL outnumbers all the others together. Django's middleware adds
about 40 % to its cost while giving it nothing: no session, user, CSRF token,
messages, static files or redirects apply to a signed machine-to-machine POST
(its URL is rebuilt from PUBLIC_BASE_URL, so not even the Host header is read).
``webhook_fast_path`` wraps the Django application and serves that one path with
the same view, request class, exception handling and request signals (which
manage persistent database connections), minus the middleware. Every other
request, including the inbound webhook, takes the ordinary path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.core import signals
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIRequest, get_script_name
from django.urls import get_script_prefix, reverse, set_script_prefix

from messaging.providers.twilio.webhooks import TwilioStatusView

FAST_ROUTES = {"webhooks:twilio-status": TwilioStatusView}


class WebhookFastPath:
    def __init__(self, application: Callable) -> None:
        self.application = application
        self._routes: dict[str, Callable] | None = None

    def routes(self) -> dict[str, Callable]:
        # Resolved on first use, when the URLconf is loaded; keys are PATH_INFO (no script prefix).
        if self._routes is None:
            prefix = get_script_prefix()
            self._routes = {
                "/" + reverse(name)[len(prefix) :]: convert_exception_to_response(view.as_view())
                for name, view in FAST_ROUTES.items()
            }
        return self._routes

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        view = self.routes().get(environ.get("PATH_INFO", ""))
        if view is None or environ.get("REQUEST_METHOD") != "POST":
            return self.application(environ, start_response)
        # What django.core.handlers.wsgi.WSGIHandler does around a request, without the middleware.
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=self.__class__, environ=environ)
        response = view(WSGIRequest(environ))
        response._handler_class = self.__class__  # response.close() sends request_finished
        start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
        return response


def webhook_fast_path(application: Callable) -> WebhookFastPath:
    return WebhookFastPath(application)
