"""Lean WSGI paths for the hottest doors: the same views, without the middleware they do not need.

A machine's POST to the status webhook, the events API or the messages API comes thousands of
times a second, and Django's full middleware stack and URL resolver cost it a quarter to a third
of its CPU while giving it nothing: no session, CSRF token, user, static file, flash message,
redirect or login lockout applies to a signed callback or a token-authenticated API call.
``FastPath`` wraps the Django application and serves those routes with the view the URLconf names,
the same request class, exception handling, error logging and request signals (which manage
persistent database connections), through only the middleware each route lists. Everything
else, including an API call signed in by a session cookie, takes the ordinary path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core import signals
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIRequest, get_script_name
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, ResolverMatch, get_script_prefix, resolve, reverse, set_script_prefix
from django.utils.log import log_response
from django.utils.module_loading import import_string

# What an API answer gets from the ordinary path, in settings.MIDDLEWARE's order: its request id
# and timing, the security headers every response carries, the Host checked against ALLOWED_HOSTS
# and the Content-Length (CommonMiddleware).
API_MIDDLEWARE = (
    "config.middleware.RequestIdMiddleware",
    "config.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.csp.CSPMiddleware",
)


def token_authorized(environ: dict) -> bool:
    """A request the API authenticates by its token alone (DRF tries the token before a session)."""
    return environ.get("HTTP_AUTHORIZATION", "")[:6].lower() == "token "


@dataclass(frozen=True)
class Route:
    name: str  # the URL pattern's name
    middleware: tuple[str, ...] = ()
    accepts: Callable[[dict], bool] = lambda environ: True


ROUTES = (
    # Signed by Twilio; its view counts and times itself.
    Route("webhooks:twilio-status"),
    Route("event-list", API_MIDDLEWARE, token_authorized),
    Route("event-batch", API_MIDDLEWARE, token_authorized),
    Route("message-list", API_MIDDLEWARE, token_authorized),
)


class FastPath:
    def __init__(self, application: Callable, routes: Iterable[Route] = ROUTES) -> None:
        self.application = application
        self.wanted = tuple(routes)
        self._handlers: dict[str, tuple[Route, Callable[[HttpRequest], HttpResponse]]] | None = None

    def handlers(self) -> dict[str, tuple[Route, Callable[[HttpRequest], HttpResponse]]]:
        # Built on first use, when the URLconf is loaded; keys are PATH_INFO (no script prefix), each
        # spelling the URLconf takes (the API's routes take their path with or without the slash).
        if self._handlers is None:
            prefix, handlers = get_script_prefix(), {}
            for route in self.wanted:
                path = "/" + reverse(route.name)[len(prefix) :]
                for spelling in {path, path.rstrip("/"), path.rstrip("/") + "/"}:
                    try:
                        match = resolve(spelling)
                    except Resolver404:
                        continue
                    if match.view_name == route.name:
                        handlers[spelling] = (route, _chain(match, route.middleware))
            self._handlers = handlers
        return self._handlers

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        found = self.handlers().get(environ.get("PATH_INFO", ""))
        if found is None or environ.get("REQUEST_METHOD") != "POST" or not found[0].accepts(environ):
            return self.application(environ, start_response)
        # What django.core.handlers.wsgi.WSGIHandler does around a request, minus most middleware.
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=self.__class__, environ=environ)
        request = WSGIRequest(environ)
        response = found[1](request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        response._handler_class = self.__class__  # response.close() sends request_finished
        headers = [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return response


def _chain(match: ResolverMatch, middleware: tuple[str, ...]) -> Callable[[HttpRequest], HttpResponse]:
    """The view of ``match`` inside ``middleware`` (outermost first), each layer converting exceptions as Django's."""
    missing = [name for name in middleware if name not in settings.MIDDLEWARE]
    if missing:
        raise ValueError(f"a fast path's middleware must be in settings.MIDDLEWARE: {missing}")

    def view(request: HttpRequest) -> HttpResponse:
        request.resolver_match = match
        response = match.func(request, *match.args, **match.kwargs)
        if callable(getattr(response, "render", None)):  # DRF's Response, a TemplateResponse
            response = response.render()
        return response

    handler = convert_exception_to_response(view)
    for name in reversed(middleware):
        handler = convert_exception_to_response(import_string(name)(handler))
    return handler
