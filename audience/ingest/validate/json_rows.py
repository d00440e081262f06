"""The records of a JSON Lines chunk, or of a JSON array's decoded objects, as Rows."""

from __future__ import annotations

import json
from collections.abc import Iterator

from audience.ingest.readers import Chunk, column_for
from audience.ingest.validate.records import ROLES, VALUE_CUT, ChunkResult, Row, cut, decode_chunk


def jsonl_rows(chunk: Chunk, result: ChunkResult) -> Iterator[Row | None]:
    text, fallback = decode_chunk(chunk)
    nul = "\x00" in text
    for line, raw in enumerate(text.split("\n"), start=chunk.start_line):
        raw = raw.strip()
        if not raw or (nul and not raw.replace("\x00", "").strip()):
            continue  # a line of NULs (padding) is a blank line; a NUL elsewhere makes the line malformed JSON
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError; an integer of over 4300 digits; nesting
            if isinstance(exc, json.JSONDecodeError):
                reason = f"malformed JSON at character {exc.colno}: {exc.msg}"
            else:
                reason = f"not readable as JSON ({str(exc).split(';')[0]})"
            result.refuse(line, "", reason, raw[:VALUE_CUT])
            continue
        row = object_row(line, value, result)
        if row is not None and line in fallback:
            result.problems.append((line, "", "warning", "not valid UTF-8; read as Windows-1252", raw[:VALUE_CUT]))
            result.warnings += 1
        yield row


def object_row(line: int, value: object, result: ChunkResult) -> Row | None:
    """A decoded JSON object as a Row, its keys placed by role as a CSV header's would be; None when refused."""
    if not isinstance(value, dict):
        result.refuse(line, "", "expected a JSON object", cut(value))
        return None
    cells: dict[str, object] = {}
    attributes: dict[str, object] = {}
    headers: dict[str, str] = {}
    for index, (key, cell) in enumerate(value.items()):
        column = column_for(index, str(key))
        if column.kind == "attribute":
            attributes[column.key] = cell
        else:
            cells[column.kind] = cell
            headers[column.kind] = str(key)
    if "phone" not in cells:
        result.refuse(line, "phone", "the object has no phone key", cut(value))
        return None
    return Row(line, tuple(map(cells.get, ROLES)), attributes, headers, decoded=True)
