"""What validation works on and hands back: rows read from a chunk, their problems, a chunk's result."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from audience.ingest.readers import Chunk, decode_text

VALUE_CUT = 200  # the characters of a cell a problem quotes
Problem = tuple[int, str, str, str, str]  # line, column, level (error or warning), reason, value


@dataclass
class ChunkResult:
    copy_data: bytes = b""
    problems: list[Problem] = field(default_factory=list)
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    warnings: int = 0
    topics: set[str] = field(default_factory=set)
    end_offset: int = 0

    def refuse(self, line: int, column: str, reason: str, value: str = "") -> None:
        """A record that is not a row at all (unreadable, no object, too many cells): counted and reported."""
        self.rows += 1
        self.invalid += 1
        self.problems.append((line, column, "error", reason, value))


class RowProblem(Exception):
    def __init__(self, column: str, reason: str, value: object = ""):
        super().__init__(reason)
        self.column, self.reason, self.value = column, reason, value


# A row's cells by role, in this order; the rest of a record's cells are attributes.
ROLES = ("phone", "name", "email", "channel", "locale", "timezone", "consent", "topics", "attributes")


@dataclass(slots=True)
class Row:
    """One record's cells as read (strings for CSV, JSON values for JSON).

    ``values``: a cell for each of ROLES, None where the record has none; ``attributes``: the other
    cells by key; ``headers``: the record's own name for each role and key, for its problems.
    """

    line: int
    values: tuple[object, ...]
    attributes: dict[str, object]
    headers: dict[str, str]
    decoded: bool = False  # from a JSON decoder, so strings may hold a NUL or a lone surrogate, numbers NaN


def cut(value: object) -> str:
    """A value as a problem quotes it: text as is, anything else as JSON, at most VALUE_CUT characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:VALUE_CUT]


def decode_chunk(chunk: Chunk) -> tuple[str, set[int]]:
    """Decode as UTF-8; lines that are not UTF-8 are read as Windows-1252 and their numbers returned.

    NUL characters are kept: the readers report them (PostgreSQL cannot store one, and removing it could
    turn a garbled cell into a valid one without a word).
    """
    try:
        return chunk.data.decode("utf-8"), set()
    except UnicodeDecodeError:
        pass
    lines, fallback = [], set()
    for number, raw in enumerate(chunk.data.split(b"\n"), start=chunk.start_line):
        text, fell_back = decode_text(raw)
        if fell_back:
            fallback.add(number)
        lines.append(text)
    return "\n".join(lines), fallback
