"""Phase 1 on every core: chunks validated by a pool of worker processes, each COPYing its own good rows."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import connection
from psycopg.conninfo import make_conninfo

from audience.ingest.readers import Chunk, Layout
from audience.ingest.validate import ChunkResult
from audience.ingest.worker import process_chunk_in_worker, worker_start


def validate_in_pool(
    chunks: Iterator[Chunk],
    layout: Layout,
    buckets: int,
    stage: str,
    workers: int,
    store: Callable[[ChunkResult], None],
) -> None:
    """Validate chunks on ``workers`` processes, at most a few in flight, handing results to ``store`` in file order."""
    window = workers * 2 + 1
    with _children_allowed(), _pool_context().Pool(workers, worker_start, (_conninfo(),)) as pool:
        pending: deque = deque()
        try:
            for chunk in chunks:
                pending.append(pool.apply_async(process_chunk_in_worker, (chunk, layout, buckets, stage)))
                if len(pending) >= window:
                    store(pending.popleft().get())
        finally:  # also when the reader stops at a malformed record: the good rows before it are kept
            while pending:
                store(pending.popleft().get())
            pool.close()  # the workers end and close their connections (leaving the block would kill them)
            pool.join()


# Connection parameters Django passes to psycopg that are not libpq's.
_NOT_LIBPQ = frozenset({"cursor_factory", "context", "prepare_threshold", "server_side_binding"})


def _conninfo() -> str:
    """libpq parameters for a worker's own connection: the database Django's connection uses."""
    params = connection.get_connection_params()
    return make_conninfo(
        "", **{key: value for key, value in params.items() if key not in _NOT_LIBPQ and value not in (None, "")}
    )


def _pool_context():
    """Workers fork from a small server process that imported only the validation code.

    Forking the web or Celery process itself would give each worker a copy of
    everything that process had loaded; the fork server keeps the tree small.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["audience.ingest.worker"])
    return context


@contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process (a Celery prefork child) start the validation pool.

    multiprocessing refuses children in daemonic processes so that they cannot be
    orphaned; the pool is closed (and its workers end) when the engine leaves the
    ``with`` block, and a worker whose parent dies reads EOF and exits.
    """
    current = multiprocessing.current_process()
    saved = dict(current._config)
    current._config["daemon"] = False
    # A Celery (billiard) child carries billiard's authkey type, which the fork server cannot be sent.
    current._config["authkey"] = multiprocessing.process.AuthenticationString(bytes(current.authkey))
    try:
        yield
    finally:
        current._config.update(saved)
