"""A CSV chunk's records validated as read, each cell placed by the role of its column (no Row is built)."""

from __future__ import annotations

import csv
import io
import operator
from collections.abc import Callable

from audience.ingest.readers import Chunk, Column, Layout
from audience.ingest.validate.records import ROLES, VALUE_CUT, ChunkResult, cut, decode_chunk
from audience.ingest.validate.rows import RowValidator
from audience.ingest.validate.storable import NUL_REASON

ENCODING_WARNING = "not valid UTF-8; read as Windows-1252 (save the file as 'CSV UTF-8' to be sure)"


class CsvPlan:
    """Where each role's cell is in a record, worked out once a chunk instead of once a row."""

    def __init__(self, columns: tuple[Column, ...]):
        self.width = max((column.index for column in columns), default=-1) + 1
        self.headers = {  # by role, an attribute by its key
            column.kind if column.kind != "attribute" else column.key: column.header for column in columns
        }
        index = {column.kind: column.index for column in columns if column.kind != "attribute"}
        # Several topics columns are joined, the join appended to the record; one is read like any other role's.
        self.topics = tuple(column.index for column in columns if column.kind == "topics")
        self.joined_topics = len(self.topics) > 1
        if self.joined_topics:
            index["topics"] = self.width + 1
        # A role the header lacks reads the None appended to each record, after its width's cells.
        # values(record): the record's cell for each of ROLES; attributes(record): its cell for each of keys.
        self.values = operator.itemgetter(*(index.get(role, self.width) for role in ROLES))
        attributes = [column for column in columns if column.kind == "attribute"]
        self.keys = tuple(column.key for column in attributes)
        self.attributes = _getter([column.index for column in attributes])

    def complete(self, record: list) -> None:
        """Make a record what values() and attributes() read: its width's cells, a None, then any joined topics."""
        count = len(record)
        if count < self.width:
            record.extend([""] * (self.width - count))
        elif count > self.width:
            del record[self.width :]  # blank cells past the header's columns (others are refused)
        record.append(None)
        if self.joined_topics:
            record.append("|".join([record[index] for index in self.topics]))


def _getter(indexes: list[int]) -> Callable[[list], tuple]:
    """The cells at ``indexes`` of a record, as a tuple (itemgetter returns a bare cell for one index)."""
    if len(indexes) == 1:
        index = indexes[0]
        return lambda record: (record[index],)
    return operator.itemgetter(*indexes) if indexes else lambda record: ()


def validate_csv(
    chunk: Chunk, layout: Layout, validator: RowValidator, result: ChunkResult, write: Callable[[str], object]
) -> None:
    """Validate the chunk's records as they are read, writing the good rows' COPY lines; records that are
    no row (unreadable, a NUL, more cells than the header has columns) are refused here.

    Each record is handed to the validator as its cells, without a Row (which cost as much as a rule).
    """
    plan = CsvPlan(layout.columns)
    values, attributes, keys, headers = plan.values, plan.attributes, plan.keys, plan.headers
    validate = validator.validate_cells
    text, fallback = decode_chunk(chunk)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=layout.delimiter)
    nul = b"\x00" in chunk.data  # rare: only then is each record looked at for a NUL, which PostgreSQL refuses
    header_at = {column.index: column.header for column in layout.columns} if nul else {}
    consumed = 0
    width = plan.width
    while True:
        start = chunk.start_line + consumed
        try:
            record: list = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            consumed = reader.line_num
            result.refuse(start, "", f"not readable as CSV ({exc})")
            continue
        consumed = reader.line_num
        if nul and any("\x00" in cell for cell in record):
            if not "".join(record).replace("\x00", "").strip():
                continue  # padding: a line of NULs is a blank line
            index = next(index for index, cell in enumerate(record) if "\x00" in cell)
            result.refuse(start, header_at.get(index, ""), NUL_REASON, cut(record[index]))
            continue
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        if len(record) > width and any(cell.strip() for cell in record[width:]):
            reason = f"{len(record)} cells but the header has {width} columns (a stray delimiter or quote?)"
            result.refuse(start, "", reason, layout.delimiter.join(record)[:VALUE_CUT])
            continue
        if fallback and any(start <= line < chunk.start_line + consumed for line in fallback):
            _warn_encoding(start, record, layout.columns, result)
        if len(record) != width or plan.joined_topics:
            plan.complete(record)
        else:
            record.append(None)  # what complete() comes to for most records
        result.rows += 1
        copy_line = validate(start, values(record), keys, attributes(record), headers, result)
        if copy_line is not None:
            write(copy_line)


def _warn_encoding(line: int, record: list[str], columns: tuple[Column, ...], result: ChunkResult) -> None:
    column, value = "", ""
    for candidate in columns:
        if candidate.index < len(record) and not record[candidate.index].isascii():
            column, value = candidate.header, record[candidate.index]
            break
    result.problems.append((line, column, "warning", ENCODING_WARNING, value[:VALUE_CUT]))
    result.warnings += 1
