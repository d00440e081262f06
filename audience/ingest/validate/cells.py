"""The rule for each kind of cell: what it must be, and the text it is stored as.

Each rule takes a cell as read (a CSV string or a decoded JSON value) and returns its COPY text, or
raises RowProblem naming what is wrong. RowValidator calls them; nothing else re-states them.
"""

from __future__ import annotations

import json
import math
import re
import zoneinfo
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

from audience.choices import Channel, ConsentStatus
from audience.ingest.validate.copy_text import NULL, copy_text
from audience.ingest.validate.records import RowProblem
from config.spreadsheet import escape_formula

CHANNELS = frozenset(Channel.values)
CONSENT_WORDS = {
    **dict.fromkeys(
        ("opted_in", "opted-in", "in", "yes", "y", "true", "1", "subscribed", "opt_in", "opt-in"),
        ConsentStatus.OPTED_IN.value,
    ),
    **dict.fromkeys(
        ("opted_out", "opted-out", "out", "no", "n", "false", "0", "unsubscribed", "opt_out", "opt-out"),
        ConsentStatus.OPTED_OUT.value,
    ),
}
LIMITS = {"name": 200, "email": 254, "locale": 16, "timezone": 64}
TOPIC_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TOPIC_SPLIT_RE = re.compile(r"[|,;]")
NUMBER_RE = re.compile(r"-?(?:0|[1-9]\d{0,14})(\.\d{1,15})?")  # the group: a decimal part
FORMULA_STARTS = frozenset("=+-@\t\r")
FORMULA_REASON = "looks like a spreadsheet formula; stored as text and escaped on export"
NUMBER_STARTS = frozenset("-0123456789")
BOOLEAN_STARTS = frozenset("tTfF")
# allow_nan=False: NaN and Infinity are not JSON, and jsonb refuses them (the ValueError becomes a row problem).
to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
json_string = json.encoder.encode_basestring  # the C encoder json uses with ensure_ascii=False
_email_validator = EmailValidator()


def clean_text(column: str, value: object) -> str | None:
    """A free-text cell stripped, None when empty; longer than the column takes is a problem."""
    if value is None:
        return None
    text = value.strip() if type(value) is str else str(value).strip()
    if not text:
        return None
    limit = LIMITS.get(column)
    if limit and len(text) > limit:
        raise RowProblem(column, f"longer than {limit} characters", text)
    return text


def email(value: object) -> str | None:
    text = clean_text("email", value)
    if text is not None:
        try:
            _email_validator(text)
        except ValidationError:
            raise RowProblem("email", "not an e-mail address", text) from None
    return text


def is_formula(value: object) -> bool:
    """Whether a spreadsheet would run this text: it is stored as written, and exports escape it."""
    return type(value) is str and value[:1] in FORMULA_STARTS and escape_formula(value) != value


def channel_text(value: object) -> str:
    text = clean_text("channel", value)
    if text is None:
        return NULL
    text = text.lower()
    if text not in CHANNELS:
        raise RowProblem("channel", "not one of whatsapp, sms", text)
    return text


def locale_text(value: object) -> str:
    return copy_text(clean_text("locale", value))


def timezone_text(value: object) -> str:
    text = clean_text("timezone", value)
    if text is not None and not _timezone_ok(text):
        raise RowProblem("timezone", "not an IANA time zone such as Africa/Nairobi", text)
    return copy_text(text)


@lru_cache(maxsize=2048)
def _timezone_ok(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # a folder (Africa, Etc) is an IsADirectoryError
        return False
    return True


def consent_text(value: object) -> str:
    if value is None or value == "":
        return NULL
    word = str(value).strip().lower()
    if word not in CONSENT_WORDS:
        raise RowProblem("consent", "not a consent value; use opted_in or opted_out", value)
    return CONSENT_WORDS[word]


def topic_names(value: object) -> list[str]:
    """Topic names from a list, or from text separated by |, comma or semicolon."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else TOPIC_SPLIT_RE.split(str(value))
    names = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if not TOPIC_RE.match(name):
            raise RowProblem("topics", "not a topic name (lower-case letters, digits, '-' and '_')", item)
        names.append(name)
    return names


def infer_scalar(text: str) -> str | int | float | bool:
    """A text cell as the JSON type a person meant: true/false, integers, decimals, else text."""
    first = text[:1]
    if first in NUMBER_STARTS:
        number = NUMBER_RE.fullmatch(text)
        if number is None:
            return text
        return float(text) if number.group(1) else int(text)
    if first in BOOLEAN_STARTS and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def json_value(value: object) -> str:
    """to_json's text for a value; strings, booleans, integers and finite floats written directly.

    Raises ValueError for NaN and Infinity, as to_json does.
    """
    kind = type(value)
    if kind is str:
        return json_string(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    return to_json(value)
