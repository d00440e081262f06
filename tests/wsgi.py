"""Requests straight to the production WSGI application (config.wsgi), fast paths included."""

from __future__ import annotations

import io

from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from config.wsgi import application


def wsgi_post(path: str, body: bytes, content_type: str, headers: dict[str, str] | None = None, query: str = ""):
    """(status line, response headers, body) of a POST through config.wsgi.application.

    ``headers`` are WSGI environ keys (HTTP_AUTHORIZATION, ...).
    """
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "SERVER_PROTOCOL": "HTTP/1.1",
        **(headers or {}),
    }
    started = []
    # As Django's test client does: closing "old" connections would close the test transaction's.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        response = application(environ, lambda status, response_headers: started.append((status, response_headers)))
        content = b"".join(response)
        response.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return started[0][0], dict(started[0][1]), content
