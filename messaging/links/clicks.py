"""Clicks from the redirect's Redis stream into the database, each exactly once; expired links' URLs blanked.

``clicks_drain`` reads the stream through a consumer group: entries it takes stay pending
until their rows are committed, then are acknowledged and deleted. A worker killed in between
leaves them pending; the next drain claims entries idle for ``RECLAIM_AFTER_MS`` and writes
them again, and the unique ``LinkClick.key`` turns the second write into nothing (the counts
are added from the rows actually inserted, so they stay exact).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from config.observe import redis_client
from messaging.links.follow import STREAM

GROUP = "drain"
READ_COUNT = 5000
RECLAIM_AFTER_MS = 30_000  # a drain holds its entries for well under a second

_WRITE_SQL = """
WITH inserted AS (
    INSERT INTO messaging_linkclick (key, link_id, clicked_at)
    SELECT v.key, v.link_id, v.at
    FROM unnest(%(keys)s::uuid[], %(links)s::bigint[], %(ats)s::timestamptz[]) AS v(key, link_id, at)
    JOIN messaging_link l ON l.id = v.link_id
    ON CONFLICT (key) DO NOTHING
    RETURNING link_id, clicked_at
), counted AS (
    SELECT link_id, count(*) AS n, min(clicked_at) AS first_at FROM inserted GROUP BY link_id
), locked AS MATERIALIZED (
    SELECT l.id FROM messaging_link l WHERE l.id IN (SELECT link_id FROM counted) ORDER BY l.id FOR NO KEY UPDATE
)
UPDATE messaging_link l
SET clicks = l.clicks + c.n, first_clicked_at = LEAST(l.first_clicked_at, c.first_at)
FROM counted c JOIN locked k ON k.id = c.link_id WHERE l.id = c.link_id
RETURNING c.n
"""
# Two drains at once may count clicks on the same links: the rows are locked in id order first,
# so they wait for each other instead of deadlocking.


def clicks_write(clicks: Iterable[tuple[uuid.UUID, int, int]]) -> int:
    """Record (key, link id, epoch ms) clicks not recorded yet, in one statement; returns clicks added."""
    keys, links, ats = [], [], []
    for key, link_id, at_ms in clicks:
        keys.append(key)
        links.append(link_id)
        ats.append(datetime.fromtimestamp(at_ms / 1000, UTC))
    if not keys:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_WRITE_SQL, {"keys": keys, "links": links, "ats": ats})
        return sum(row[0] for row in cursor.fetchall())


def _group_ensure(client: redis.Redis) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _parsed(entries) -> list[tuple[uuid.UUID, int, int]]:
    rows = []
    for _entry_id, fields in entries:
        if not fields:  # deleted meanwhile
            continue
        rows.append((uuid.UUID(bytes=fields[b"k"]), int(fields[b"l"]), int(fields[b"t"])))
    return rows


def _settle(client: redis.Redis, entries) -> int:
    ids = [entry_id for entry_id, _ in entries]
    if not ids:
        return 0
    added = clicks_write(_parsed(entries))
    pipe = client.pipeline(transaction=False)  # only once the rows are committed
    pipe.xack(STREAM, GROUP, *ids)
    pipe.xdel(STREAM, *ids)
    pipe.execute()
    return added


def clicks_drain(*, max_batches: int = 100, consumer: str | None = None) -> int:
    """Write the streamed clicks (entries a dead drain left first); returns clicks added."""
    client = redis_client()
    _group_ensure(client)
    consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
    added = 0
    _next, stale, *_ = client.xautoclaim(STREAM, GROUP, consumer, RECLAIM_AFTER_MS, "0-0", count=READ_COUNT)
    added += _settle(client, stale)
    for _ in range(max_batches):
        answer = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=READ_COUNT)
        entries = answer[0][1] if answer else []
        if not entries:
            break
        added += _settle(client, entries)
    return added


def links_expire(*, batch_size: int | None = None) -> int:
    """Blank the URL of links past their expiry (their counts stay); returns links blanked."""
    from messaging.retention import purge_in_batches

    sql = """
    UPDATE messaging_link SET url = '' WHERE id IN (
        SELECT id FROM messaging_link WHERE expires_at < %(cutoff)s AND url <> '' LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    )
    """
    return purge_in_batches(sql, timezone.now(), batch_size or settings.RETENTION_BATCH_SIZE)
