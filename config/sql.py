"""Hot-path SQL with server-side parameters, for statements that touch a batch of rows at once.

Django's psycopg cursor binds parameters on the client: it parses the statement and quotes every
value into its text, which for a ``VALUES`` list of a few hundred rows costs more CPU than the
database spends running it. Here the batch travels as one array per column (``unnest``), so the
statement's text is the same for every batch (psycopg caches its conversion and prepares it
after a few runs) and the values are sent apart from it. The cursor is a plain server-binding
psycopg cursor on Django's own connection: same transaction, errors wrapped as Django's.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from django.db import connection
from psycopg.sql import Literal


def literal(value: str) -> str:
    """A choice's value quoted as an SQL literal, for statements whose text is built once per choice
    (cached, prepared) and cannot take it as a parameter."""
    return Literal(str(value)).as_string(None)


def fetch(sql: str, params: Sequence | dict = ()) -> list[tuple]:
    """Run one statement on the default connection with server-side parameters; its rows, if any."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def unnest(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence]) -> tuple[str, list[list]]:
    """``unnest(%s::kind[], ...) AS v (name, ...)`` for ``columns`` [(name, kind)] and its array parameters."""
    arrays: list[list] = [[] for _ in columns]
    for row in rows:
        for index, value in enumerate(row):
            arrays[index].append(value)
    casts = ", ".join(f"%s::{kind}[]" for _, kind in columns)
    names = ", ".join(name for name, _ in columns)
    return f"unnest({casts}) AS v ({names})", arrays


def values_update(
    table_sql: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence],
    sets: str,
    tail: str,
    *,
    set_params: Sequence = (),
    tail_params: Sequence = (),
) -> list[tuple]:
    """``UPDATE table SET sets FROM unnest(...) AS v tail`` for many rows in one statement.

    ``tail`` is the WHERE (and RETURNING) part; ``set_params`` and ``tail_params`` fill the
    placeholders of ``sets`` and ``tail``.
    """
    if not rows:
        return []
    source, arrays = unnest(columns, rows)
    return fetch(f"UPDATE {table_sql} SET {sets} FROM {source} {tail}", [*set_params, *arrays, *tail_params])


def fetch_one_prepared(query: str, params: dict | Sequence = ()) -> tuple | None:
    """One hot-path statement as a server-side prepared statement on Django's connection; its first row.

    For a door's one statement per request (a webhook's status, a single event): planning such a
    statement costs more than running it, so it is prepared once per connection (Django disables
    psycopg's automatic preparing; its own ClientCursor never prepares, so enabling it on the raw
    connection affects only cursors like this one). It also skips the per-request health check
    query (CONN_HEALTH_CHECKS): a persistent connection found broken outside a transaction is
    replaced and the statement, which must be safe to run twice, retried once. With
    DATABASE_PREPARED_STATEMENTS off (a pooler in transaction mode, where the next transaction may
    run on another server connection) it is sent unprepared, its parameters still apart from its text.
    """
    from django.conf import settings
    from django.db import OperationalError

    prepare = settings.DATABASE_PREPARED_STATEMENTS
    for attempt in (1, 2):
        connection.ensure_connection()
        raw = connection.connection
        if prepare and raw.prepare_threshold is None:
            raw.prepare_threshold = 2**31 - 1  # prepare only what asks for it (prepare=True)
        try:
            with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
                cursor.execute(query, params, prepare=prepare)
                return cursor.fetchone() if cursor.description else None
        except OperationalError:
            if attempt == 2 or connection.in_atomic_block:
                raise
            connection.close()
    raise AssertionError("unreachable")
