"""Event retention: events received more than RETENTION_EVENTS_DAYS ago are deleted, in batches.

An event a campaign answered (a recipient points at it) stays as long as its recipient: it is why
a message went out, and the run's figures and frequency caps count that recipient. Only its
properties, the personal content, are emptied. Its links to matched campaigns go with a deleted
event.

Each batch is one short transaction over the next ``batch_size`` old events in id order, locked
``FOR UPDATE`` (a concurrent run waits for the rows, then finds them gone: each is handled once).
The walk starts after a watermark kept in Redis, the highest id already handled, so the kept
events at the old end of the table are not read again every hour. The watermark names the
database and the table's OID (a recreated or restored table starts afresh) and lives a week from
when it was set, so whatever it could miss (a restore that brought back events it had passed) is
walked again within a week; without it (expired, Redis flushed) a run walks from the start.
Ids follow ``received_at`` (both are set at insert), so the walk stops at the first event young
enough to keep, found through the primary key from the watermark, never by scanning the table;
an event committed out of order only delays the ones behind it by the difference.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from config.observe import redis_client

logger = logging.getLogger(__name__)

MAX_BATCHES_PER_RUN = 200  # a run stops after this many batches; the next run goes on
WATERMARK_KEY = "mp:retention:events:"  # + the database name and the table's OID
WATERMARK_SECONDS = 7 * 24 * 3600

# The first event young enough to stay, after the watermark: where this run's walk ends.
_BOUND_SQL = """
SELECT id FROM campaigns_event WHERE id > %(after)s AND received_at >= %(cutoff)s ORDER BY id LIMIT 1
"""
_BATCH_SQL = """
WITH batch AS (
    SELECT id FROM campaigns_event
    WHERE id > %(after)s AND id < %(bound)s AND received_at < %(cutoff)s
    ORDER BY id LIMIT %(limit)s
    FOR UPDATE
),
answered AS (
    SELECT b.id FROM batch b WHERE EXISTS (SELECT 1 FROM campaigns_recipient r WHERE r.event_id = b.id)
),
unlinked AS (
    DELETE FROM campaigns_event_matched_campaigns m USING batch b
    WHERE m.event_id = b.id AND NOT EXISTS (SELECT 1 FROM answered a WHERE a.id = b.id)
),
deleted AS (
    DELETE FROM campaigns_event e USING batch b
    WHERE e.id = b.id AND NOT EXISTS (SELECT 1 FROM answered a WHERE a.id = b.id)
    RETURNING e.id
),
emptied AS (
    UPDATE campaigns_event e SET properties = '{}'::jsonb FROM answered a
    WHERE e.id = a.id AND e.properties <> '{}'::jsonb
    RETURNING e.id
)
SELECT (SELECT count(*) FROM batch), (SELECT max(id) FROM batch),
       (SELECT count(*) FROM deleted), (SELECT count(*) FROM emptied)
"""
# Raise the watermark, never lower it (two runs at once each report how far they went); its life
# runs from when it was first set.
_RAISE = """
local now = redis.call('GET', KEYS[1])
if not now then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
elseif tonumber(ARGV[1]) > tonumber(now) then
    redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
end
"""


def _watermark_key() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'campaigns_event'::regclass::oid")
        oid = cursor.fetchone()[0]
    return f"{WATERMARK_KEY}{connection.settings_dict['NAME']}:{oid}"


def _watermark() -> int:
    try:
        value = redis_client().get(_watermark_key())
    except redis.RedisError as exc:
        logger.warning("event retention walks from the start, Redis did not answer: %s", exc)
        return 0
    return int(value) if value else 0


def _watermark_raise(after: int) -> None:
    try:
        redis_client().eval(_RAISE, 1, _watermark_key(), after, WATERMARK_SECONDS)
    except redis.RedisError as exc:
        logger.warning("event retention could not keep its place, Redis did not answer: %s", exc)


def event_retention_purge(*, days: int | None = None, batch_size: int | None = None) -> dict[str, int]:
    """Delete events older than ``days`` (0: keep forever); empty those a recipient answers. Safe to run twice."""
    days = settings.RETENTION_EVENTS_DAYS if days is None else days
    done = {"deleted": 0, "emptied": 0}
    if days <= 0:
        return done
    limit = batch_size or settings.RETENTION_BATCH_SIZE
    cutoff = timezone.now() - timedelta(days=days)
    after = _watermark()
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id) FROM campaigns_event")
        highest = cursor.fetchone()[0] or 0
        if after > highest:  # the table was emptied or restored: start again
            after = 0
        cursor.execute(_BOUND_SQL, {"after": after, "cutoff": cutoff})
        row = cursor.fetchone()
    bound = row[0] if row else highest + 1
    for _ in range(MAX_BATCHES_PER_RUN):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_BATCH_SQL, {"after": after, "bound": bound, "cutoff": cutoff, "limit": limit})
            seen, last, deleted, emptied = cursor.fetchone()
        done["deleted"] += deleted
        done["emptied"] += emptied
        if not seen:
            break
        after = last
        _watermark_raise(after)
        if seen < limit:
            break
    return done
