"""Per-row validation, run in worker processes over chunks of records.

A chunk comes in as raw bytes (CSV, JSONL) or decoded objects (JSON array) and
goes out as COPY-ready text for the staging table plus the problems found, so
the main process only streams bytes into PostgreSQL.

- ``chunks``: process_chunk, a worker's entry point.
- ``csv_rows``: a CSV chunk's records, validated as read; ``json_rows``: JSON records as Rows.
- ``rows``: RowValidator, one row (a Row, or a CSV record's cells) to one COPY line or one problem,
  for imports and previews alike.
- ``cells``: the rule for each kind of cell.
- ``storable``: what PostgreSQL cannot store, and problems made printable.
- ``copy_text``: COPY's text format.
"""

from audience.ingest.validate.cells import infer_scalar
from audience.ingest.validate.chunks import process_chunk
from audience.ingest.validate.copy_text import STAGE_COLUMNS, copy_unescape
from audience.ingest.validate.records import ChunkResult, Row, RowProblem
from audience.ingest.validate.rows import RowValidator

__all__ = [
    "STAGE_COLUMNS",
    "ChunkResult",
    "Row",
    "RowProblem",
    "RowValidator",
    "copy_unescape",
    "infer_scalar",
    "process_chunk",
]
