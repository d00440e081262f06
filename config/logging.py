"""Structured logs: one JSON object per line, carrying the request id and the ids a task works on.

The ids live in one context variable (``log_context``), set by the request-id middleware for a
request and by Celery's ``task_prerun`` signal for a task (from the task's ``campaign_id``,
``run_id`` and ``message_id`` arguments); any code may add its own with ``log_context(...)``.
``ContextFilter`` copies them onto every record, so the text format shows them too.

Phone numbers and message bodies are not logged on purpose; as a second line of defence,
``RedactFilter`` on the handler masks phone numbers (any common spelling, URL-encoded too) and
e-mail addresses in every string of every record, at every level: the message and its arguments,
extras (a request, a task's arguments), the exception's text and traceback, the stack. Loggers
that would bypass it write through it instead: Django's development server, and gunicorn's access
and error logs (``config.gunicorn_conf``, whose access lines also leave out the query string).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from logging.config import dictConfig
from types import MappingProxyType
from typing import Any

from celery import signals
from django.conf import settings

from config.privacy import redact

CONTEXT_FIELDS = ("request_id", "task", "campaign_id", "run_id", "message_id")
TASK_ID_ARGUMENTS = ("campaign_id", "run_id", "message_id")
_context: ContextVar[Mapping[str, Any]] = ContextVar("log_context", default=MappingProxyType({}))

# "+" then 8 to 15 digits, not inside a longer run of digits or letters (E.164 with a few spaces).
E164 = re.compile(r"(?<![\w+])\+\d[\d ]{6,17}\d(?!\d)")
_PLAIN_TYPES = (int, float, bool, type(None))

# Attributes every LogRecord has; anything else was passed with extra= and is logged as a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# --- Context -------------------------------------------------------------------------------


def context_get() -> Mapping[str, Any]:
    return _context.get()


def context_set(**ids: Any):
    """Add ids to the current context; returns the token for ``context_reset``."""
    return _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})


def context_reset(token) -> None:
    _context.reset(token)


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """``with log_context(run_id=7):`` every record logged inside carries run_id=7."""
    token = context_set(**ids)
    try:
        yield
    finally:
        context_reset(token)


def phone_redact(text: str) -> str:
    """+254712345678 -> +25********78 (and every other spelling, and e-mail addresses: config.privacy.redact)."""
    return redact(text)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ids = _context.get()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, ids.get(name))
        return True


class RedactFilter(logging.Filter):
    """Redacts every string of a record (see the module's docstring); it runs before any formatter."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # arguments that do not fit: logging reports it itself
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRS and name not in CONTEXT_FIELDS and not name.startswith("_"):
                setattr(record, name, _redacted(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _redacted(value):
    """An extra's value with its strings redacted; objects other than plain values become their redacted text."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, _PLAIN_TYPES):
        return value
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redacted(item) for item in value]
    return redact(str(value))


# --- Formatters ----------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context ids, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRS and name not in event and name not in CONTEXT_FIELDS and name[0] != "_":
                event[name] = value
        if record.exc_info or record.exc_text:
            event["exception"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The development format: a plain line, with whichever context ids are set at its end."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None))
        return f"{line} [{ids}]" if ids else line


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """The LOGGING setting: ``fmt`` is "json" (production) or "text" (development)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "config.logging.ContextFilter"},
            "redact": {"()": "config.logging.RedactFilter"},
        },
        "formatters": {
            "json": {"()": "config.logging.JsonFormatter"},
            "text": {"()": "config.logging.TextFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "filters": ["context", "redact"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's own handlers go: its error mails carry the whole request (phones in forms and
            # URLs), and the development server's lines would skip the redaction. Both log through root.
            "django": {"handlers": [], "propagate": True},
            "django.server": {"handlers": [], "propagate": True},
            "django.db.backends": {"level": "INFO"},
            # The twilio client logs each request's URL and query (phone numbers) at INFO.
            "twilio": {"level": "WARNING"},
        },
    }


# --- Celery --------------------------------------------------------------------------------

_signatures: dict[str, inspect.Signature | None] = {}
_task_tokens: dict[str, Any] = {}


def _task_ids(task, args, kwargs) -> dict[str, Any]:
    """campaign_id / run_id / message_id among a task's arguments, positional ones included."""
    if task.name not in _signatures:
        try:
            _signatures[task.name] = inspect.signature(task.run)
        except (TypeError, ValueError):
            _signatures[task.name] = None
    signature = _signatures[task.name]
    try:
        bound = signature.bind_partial(*(args or ()), **(kwargs or {})).arguments if signature else kwargs or {}
    except TypeError:
        bound = kwargs or {}
    return {name: bound[name] for name in TASK_ID_ARGUMENTS if name in bound}


def _on_task_prerun(task_id=None, task=None, args=None, kwargs=None, **_):
    if task is not None and task_id is not None:
        _task_tokens[task_id] = context_set(task=task.name, **_task_ids(task, args, kwargs))


def _on_task_postrun(task_id=None, **_):
    token = _task_tokens.pop(task_id, None)
    if token is not None:
        with contextlib.suppress(ValueError):  # set in another context (a thread pool): nothing to undo
            context_reset(token)


def _on_before_task_publish(headers=None, **_):
    # When the task entered the queue: the oldest task's age is read back from the broker.
    if headers is not None:
        headers.setdefault("published_at", time.time())
        # The arguments as workers log them and monitors (events, inspect) show them: redacted. The
        # message body keeps the real ones for the task to run with.
        for name in ("argsrepr", "kwargsrepr"):
            if isinstance(headers.get(name), str):
                headers[name] = redact(headers[name])


def _on_setup_logging(**_):
    # Celery keeps its hands off the root logger and the workers log as the web does.
    dictConfig(settings.LOGGING)


def celery_signals_connect() -> None:
    signals.setup_logging.connect(_on_setup_logging, weak=False, dispatch_uid="config.logging.setup")
    signals.task_prerun.connect(_on_task_prerun, weak=False, dispatch_uid="config.logging.prerun")
    signals.task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="config.logging.postrun")
    signals.before_task_publish.connect(_on_before_task_publish, weak=False, dispatch_uid="config.logging.publish")
