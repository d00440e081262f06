"""What runs in a validation worker process: validate a chunk, COPY its good rows into the stage itself.

Each worker keeps one PostgreSQL connection of its own, so the staged rows go
from the worker straight to the database: the main process only hands out
chunks and records the problems, and the stage's COPY work is spread over as
many server processes as there are workers. This module does not set Django
up; the connection is plain psycopg with the parameters Django would use.
"""

from __future__ import annotations

import gc
from multiprocessing import util

import psycopg

from audience.ingest import sql
from audience.ingest.readers import Chunk, Layout
from audience.ingest.validate import STAGE_COLUMNS, ChunkResult, process_chunk

_conninfo = ""
_connection: psycopg.Connection | None = None


def worker_start(conninfo: str) -> None:
    """A worker's first step. What it inherited is made permanent, so collecting after a chunk is cheap."""
    global _conninfo
    _conninfo = conninfo
    gc.freeze()


def _stage_connection() -> psycopg.Connection:
    global _connection
    if _connection is None or _connection.closed:
        # Never prepared: a pooler in transaction mode (DATABASE_POOLER) may sit at the other end.
        _connection = psycopg.connect(_conninfo, autocommit=True, prepare_threshold=None)
        util.Finalize(None, _connection.close, exitpriority=10)  # a clean goodbye when the pool closes
    return _connection


def process_chunk_in_worker(chunk: Chunk, layout: Layout, buckets: int, stage: str) -> ChunkResult:
    """Validate a chunk, COPY its good rows into ``stage`` and return the rest of the result.

    Then collect the chunk's reference cycles: phonenumbers leaves a cycle of
    frames and exceptions for every number it rejects, and those frames hold
    the chunk's text; left to the collector's own schedule, a worker's heap grew
    by about 0.4 MB a chunk. With the inherited objects frozen, a collection
    scans only the chunk's own (well under a millisecond).
    """
    result = process_chunk(chunk, layout, buckets)
    if result.copy_data:
        with _stage_connection().cursor() as cursor, cursor.copy(sql.copy_from_stdin(stage, STAGE_COLUMNS)) as copy:
            copy.write(result.copy_data)
        result.copy_data = b""
    gc.collect()
    return result
