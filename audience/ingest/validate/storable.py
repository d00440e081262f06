"""What PostgreSQL cannot store: a NUL (text and jsonb refuse it), a lone UTF-16 surrogate (not UTF-8),
and in jsonb a number that is not finite. Decoded JSON can hold all three; CSV text only a NUL."""

from __future__ import annotations

import json
import math
import re

from audience.ingest.validate.records import ROLES, Problem, RowProblem

BAD_TEXT_RE = re.compile(r"[\x00\ud800-\udfff]")
NUL_REASON = "contains a NUL character"
SURROGATE_REASON = "contains a lone UTF-16 surrogate, which is not a character"
NOT_FINITE_REASON = "is not a finite number"
COLUMN_CUT = 100  # ImportRowError.column's max_length


def text_reason(text: str) -> str | None:
    """Why PostgreSQL cannot store this text, or None."""
    found = BAD_TEXT_RE.search(text)
    if found is None:
        return None
    return NUL_REASON if found.group() == "\x00" else SURROGATE_REASON


def _value_reason(value: object, numbers: bool) -> str | None:
    """Why PostgreSQL cannot store a decoded JSON value, its nested keys and values included, or None.

    Without a stack of calls: a value nested as deep as the decoder allows must not raise RecursionError.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str:
            reason = text_reason(item)
            if reason:
                return reason
        elif kind is float:
            if numbers and not math.isfinite(item):
                return NOT_FINITE_REASON
        elif kind is dict:
            pending.extend(item.keys())
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return None


def unstorable(values: tuple[object, ...], attributes: dict[str, object]) -> RowProblem | None:
    """A row's first value PostgreSQL cannot store, as a problem; None when every one can be stored.

    ``values``: the row's cell for each of ROLES; ``attributes``: its attribute cells by key.

    Run only for a row whose COPY line or attributes showed a sign of one, so good rows are not walked.
    Cells other than attributes are stored as text, where a NaN is just the text 'nan'.
    """
    for kind, value in zip(ROLES, values, strict=True):
        if value is None:
            continue
        decoded = value
        if kind == "attributes" and type(value) is str:
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                continue
        reason = _value_reason(decoded, numbers=kind == "attributes")
        if reason:
            return RowProblem(kind, reason, value)
    for key, value in attributes.items():
        reason = text_reason(key) if type(key) is str else None
        if reason:
            return RowProblem(key, f"the key {reason}", key)
        reason = _value_reason(value, numbers=True)
        if reason:
            return RowProblem(key, reason, value)
    return None


def storable_problems(problems: list[Problem]) -> None:
    """Make each problem storable and printable: a NUL or lone surrogate in a column name, reason or value
    (a JSON key, a quoted cell) written as an escape, a column name cut to what ImportRowError takes."""
    for index, (line, column, level, reason, value) in enumerate(problems):
        if len(column) > COLUMN_CUT or BAD_TEXT_RE.search(column) or BAD_TEXT_RE.search(reason):
            problems[index] = (line, _printable(column)[:COLUMN_CUT], level, _printable(reason), _printable(value))
        elif BAD_TEXT_RE.search(value):
            problems[index] = (line, column, level, reason, _printable(value))


def _printable(text: str) -> str:
    """The text with each NUL written as \\x00 and each lone surrogate as \\udxxx, as Python escapes them."""
    if BAD_TEXT_RE.search(text) is None:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
