"""The ``/l/<code>`` redirect, as a Django view (runserver, tests) and as a lean WSGI path (gunicorn).

Both call ``follow.link_follow``. The WSGI path (``link_fast_path``, wrapped around the Django
application in config/wsgi.py) answers without Django's request, middleware or URL resolver:
at a campaign's peak a short link is opened thousands of times a second and needs none of them.
Around a database lookup (a code not cached yet) it sends Django's request signals, which manage
the database connection; a cached code needs one Redis round trip and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from django.core import signals
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from messaging.links.follow import link_follow

GONE_PAGE = (
    b"<!doctype html><html><head><meta charset='utf-8'><title>Link not found</title></head><body>"
    b"<p>This link is unknown or has expired.</p></body></html>"
)
PREFIX = "/l/"


def link_redirect(request: HttpRequest, code: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    url = link_follow(code, request.method, request.headers.get("User-Agent", ""))
    if url is None:
        return HttpResponse(GONE_PAGE, status=404, content_type="text/html; charset=utf-8")
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = "no-store"  # every click reaches us, none a cache
    response["Referrer-Policy"] = "no-referrer"
    return response


class LinkFastPath:
    def __init__(self, application: Callable) -> None:
        self.application = application

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if not path.startswith(PREFIX) or method not in ("GET", "HEAD") or "/" in path[len(PREFIX) :]:
            return self.application(environ, start_response)
        url = link_follow(
            path[len(PREFIX) :], method, environ.get("HTTP_USER_AGENT", ""), database=lambda: _request(environ)
        )
        if url is None:
            body = b"" if method == "HEAD" else GONE_PAGE
            headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(GONE_PAGE)))]
            start_response("404 Not Found", headers)
            return [body]
        start_response(
            "302 Found",
            [
                ("Location", _header_safe(url)),
                ("Content-Length", "0"),
                ("Cache-Control", "no-store"),
                ("Referrer-Policy", "no-referrer"),
            ],
        )
        return [b""]


@contextlib.contextmanager
def _request(environ: dict):
    """Django's request signals, which open and close the database connection as a request would."""
    signals.request_started.send(sender=LinkFastPath, environ=environ)
    try:
        yield
    finally:
        signals.request_finished.send(sender=LinkFastPath)


def _header_safe(url: str) -> str:
    """What HttpResponseRedirect sends: the URL with non-ASCII characters percent-encoded."""
    from django.utils.encoding import iri_to_uri

    return iri_to_uri(url)


def link_fast_path(application: Callable) -> LinkFastPath:
    return LinkFastPath(application)
