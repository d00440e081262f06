"""PostgreSQL COPY text: how a value is written into a staging line and read back from one."""

from __future__ import annotations

import re

# The staging table's columns, in the order of a COPY line's cells.
STAGE_COLUMNS = (
    "line",
    "bucket",
    "phone",
    "name",
    "email",
    "channel",
    "locale",
    "timezone",
    "consent",
    "attributes",
    "topics",
)
NULL = "\\N"
ESCAPE_MAP = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}  # what COPY text escapes
_ESCAPES = str.maketrans(ESCAPE_MAP)
_UNESCAPES = {escaped[1]: raw for raw, escaped in ESCAPE_MAP.items()}
_ESCAPED = re.compile(r"\\(.)")
# A NUL in JSON text as jsonb sees it in a COPY line: the escape \u0000 with its backslash escaped for COPY. A
# text that really holds a backslash and "u0000" has it too, and the row is then looked at and found good.
JSON_NUL = "\\\\u0000"


def copy_text(value: str | None) -> str:
    """``value`` as a cell of a COPY line: NULL for None, else with COPY's escapes."""
    if value is None:
        return NULL
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_ESCAPES)
    return value


def copy_unescape(cell: str) -> str:
    """A value of COPY text as it will be stored: copy_text's escapes undone (``\\N`` is the caller's)."""
    if "\\" not in cell:
        return cell
    return _ESCAPED.sub(lambda found: _UNESCAPES.get(found.group(1), found.group(1)), cell)
