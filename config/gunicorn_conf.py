"""gunicorn's settings wherever the platform runs it: ``gunicorn -c python:config.gunicorn_conf ...``.

The access log is the one log Django's redaction does not see: gunicorn writes it itself. Its
lines leave out the query string (``?phone=%2B2547…``) and the referrer's, and every field that
is left (the path, headers, the user agent) goes through config.privacy.redact; the error log
gets config.logging's RedactFilter, as Django's records do.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from gunicorn.glogging import Logger

from config.logging import RedactFilter
from config.privacy import redact

logger_class = "config.gunicorn_conf.RedactingLogger"
# The combined format, with the request line built from the path alone (no query string).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class RedactingLogger(Logger):
    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if not any(isinstance(existing, RedactFilter) for existing in handler.filters):
                    handler.addFilter(RedactFilter())

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        path = environ.get("PATH_INFO") or "/"
        atoms["r"] = f"{environ.get('REQUEST_METHOD', '-')} {path} {environ.get('SERVER_PROTOCOL', '-')}"
        atoms["q"] = ""
        atoms["f"] = _without_query(atoms.get("f") or "-")
        for key in [key for key in atoms if key.startswith("{")]:
            if key.lower() in ("{query_string}e", "{raw_uri}e", "{referer}i"):
                del atoms[key]
        return {key: redact(value) if isinstance(value, str) else value for key, value in atoms.items()}


def _without_query(url: str) -> str:
    if "?" not in url:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
