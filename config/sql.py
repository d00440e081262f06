"""Hot-path SQL with server-side parameters, for statements that touch a batch of rows at once.

Django's psycopg cursor binds parameters on the client: it parses the statement and quotes every
value into its text, which for a ``VALUES`` list of a few hundred rows costs more CPU than the
database spends running it. Here the batch travels as one array per column (``unnest``), so the
statement's text is the same for every batch (psycopg caches its conversion and prepares it
after a few runs) and the values are sent apart from it. The cursor is a plain server-binding
psycopg cursor on Django's own connection: same transaction, errors wrapped as Django's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import psycopg
from django.db import connection, connections
from django.db.models import Model
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
        _logged(sql)
        return cursor.fetchall() if cursor.description else []


def _logged(query: str) -> None:
    """Recorded in connection.queries when Django records its own (DEBUG, or a test counting queries)."""
    if connection.queries_logged:
        connection.queries_log.append({"sql": query, "time": "0.000"})


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


def fetch_one_prepared(query: str, params: dict | Sequence = (), *, retry: bool = True) -> tuple | None:
    """One hot-path statement as a server-side prepared statement on Django's connection; its first row.

    For a door's one statement per request (a webhook's status, a single event): planning such a
    statement costs more than running it, so it is prepared once per connection (Django disables
    psycopg's automatic preparing; its own ClientCursor never prepares, so enabling it on the raw
    connection affects only cursors like this one). It also skips the per-request health check
    query (CONN_HEALTH_CHECKS): a persistent connection found broken outside a transaction is
    replaced and the statement, which must be safe to run twice, retried once. With
    DATABASE_PREPARED_STATEMENTS off (a pooler in transaction mode, where the next transaction may
    run on another server connection) it is sent unprepared, its parameters still apart from its text.

    ``retry=False``, for a statement not safe to run twice (an INSERT without a unique key): the
    connection gets Django's health check first, unless a statement has just run on it, and a
    failure is raised, never retried.
    """
    from django.conf import settings
    from django.db import OperationalError

    prepare = settings.DATABASE_PREPARED_STATEMENTS
    if not retry:
        connection.close_if_health_check_failed()
    for attempt in (1, 2):
        connection.ensure_connection()
        raw = connection.connection
        if prepare and raw.prepare_threshold is None:
            raw.prepare_threshold = 2**31 - 1  # prepare only what asks for it (prepare=True)
        try:
            with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
                cursor.execute(query, params, prepare=prepare)
                _logged(query)
                connection.health_check_done = True  # it just answered: no SELECT 1 before the next
                return None if cursor.rownumber is None else cursor.fetchone()  # (rows or not, without description)
        except OperationalError:
            if attempt == 2 or connection.in_atomic_block or not retry:
                raise
            connection.close()
    raise AssertionError("unreachable")


def instances_by_pk(wanted: Sequence[tuple[type[Model], int | None]]) -> list[Model | None]:
    """One row of each of several tables by primary key, in one prepared statement; None for a missing row.

    A request that names a contact, a template and a sender reads the three in one round trip
    instead of three ORM queries. Values pass through each field's ``from_db_value`` as the ORM's
    would (a JSON field's text becomes its value).
    """
    statement, slices = _instances_statement(tuple(model for model, _ in wanted))
    row = fetch_one_prepared(statement, [pk for _, pk in wanted])
    wrapper = connections[connection.alias]  # not through the proxy for each value
    found: list[Model | None] = []
    for (model, _), (start, fields) in zip(wanted, slices, strict=True):
        values = row[start : start + len(fields)]
        if values[0] is None:  # the primary key comes first
            found.append(None)
            continue
        values = [
            field.from_db_value(value, None, wrapper) if hasattr(field, "from_db_value") else value
            for field, value in zip(fields, values, strict=True)
        ]
        found.append(model.from_db(wrapper.alias, [field.attname for field in fields], values))
    return found


@functools.cache
def _instances_statement(models: tuple[type[Model], ...]) -> tuple[str, list[tuple[int, list]]]:
    quote = connection.ops.quote_name
    columns, joins, slices = [], [], []
    for index, model in enumerate(models):
        alias = f"t{index}"
        fields = [model._meta.pk, *(field for field in model._meta.concrete_fields if not field.primary_key)]
        slices.append((len(columns), fields))
        columns += [f"{alias}.{quote(field.column)}" for field in fields]
        pk_type = model._meta.pk.rel_db_type(connection)
        joins.append(
            f"LEFT JOIN {quote(model._meta.db_table)} {alias} ON {alias}.{quote(model._meta.pk.column)} = %s::{pk_type}"
        )
    return f"SELECT {', '.join(columns)} FROM (SELECT 1) AS one {' '.join(joins)}", slices
