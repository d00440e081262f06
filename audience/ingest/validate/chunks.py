"""A worker's unit of work: one chunk of records in, its COPY text and problems out."""

from __future__ import annotations

import io
from collections.abc import Iterable

from audience.ingest.readers import Chunk, Layout
from audience.ingest.validate.csv_rows import validate_csv
from audience.ingest.validate.json_rows import jsonl_rows, object_row
from audience.ingest.validate.records import ChunkResult, Row
from audience.ingest.validate.rows import RowValidator
from audience.ingest.validate.storable import storable_problems


def process_chunk(chunk: Chunk, layout: Layout, buckets: int) -> ChunkResult:
    """Parse and validate one chunk: the good rows as COPY text for the stage, the problems of the rest."""
    result = ChunkResult(end_offset=chunk.end_offset)
    validator = RowValidator(buckets, layout.attribute_limits, layout.default_region)
    out = io.StringIO()
    write = out.write
    if chunk.kind == "csv":
        validate_csv(chunk, layout, validator, result, write)
    else:
        rows: Iterable[Row | None]
        if chunk.kind == "jsonl":
            rows = jsonl_rows(chunk, result)
        else:
            rows = (object_row(line, value, result) for line, value in chunk.data)
        for row in rows:
            if row is None:
                continue
            result.rows += 1
            copy_line = validator.validate(row, result)
            if copy_line is not None:
                write(copy_line)
    result.copy_data = out.getvalue().encode("utf-8")
    storable_problems(result.problems)
    return result
