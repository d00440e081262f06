"""Per-run message counters that stay exactly equal to a recount.

Each campaign message has one ``CountedMessage`` row holding the state it is counted in. Syncing a
message upserts that row from the message and moves one count from the old key to the new one,
in one statement: the message row is read ``FOR SHARE`` (the latest committed version, and no
status change can commit until the statement ends), and the upsert's ``ON CONFLICT`` sees the
latest counted state, so concurrent syncs of one message count it once. Statuses arrive unordered
and twice; whatever the order, the counted state is the message's current state.

Two doors sync: the ``message_status_changed`` receiver (callbacks, right after they commit) and
``counters_sweep`` (beat), for changes made without the signal (claims, send results, retries).
``counters_recount`` rebuilds everything from messages and recipients.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

SYNC_CHUNK = 1000
SWEEP_SLACK = timedelta(minutes=2)
SWEEP_FIRST_WINDOW = timedelta(minutes=15)
SWEEP_WATERMARK_KEY = "reporting:counters:swept_at"

_SYNC_SQL = """
WITH cur AS (
    SELECT m.id AS message_id, r.run_id, run.campaign_id, m.status, m.error_code, m.price_unit, m.price
    FROM messaging_message m
    JOIN campaigns_recipient r ON r.message_id = m.id
    JOIN campaigns_campaignrun run ON run.id = r.run_id
    WHERE m.id = ANY(%(ids)s)
    ORDER BY m.id
    FOR SHARE OF m
), up AS (
    INSERT INTO reporting_countedmessage AS c
        (message_id, run_id, campaign_id, status, error_code, price_unit, price,
         prev_status, prev_error_code, prev_price_unit, prev_price)
    SELECT message_id, run_id, campaign_id, status, error_code, price_unit, price, '', '', '', NULL FROM cur
    ORDER BY message_id
    ON CONFLICT (message_id) DO UPDATE SET
        status = EXCLUDED.status, error_code = EXCLUDED.error_code,
        price_unit = EXCLUDED.price_unit, price = EXCLUDED.price,
        prev_status = c.status, prev_error_code = c.error_code,
        prev_price_unit = c.price_unit, prev_price = c.price
    WHERE (c.status, c.error_code, c.price_unit, c.price)
        IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.error_code, EXCLUDED.price_unit, EXCLUDED.price)
    RETURNING c.run_id, c.campaign_id, c.status, c.error_code, c.price_unit, c.price,
              c.prev_status, c.prev_error_code, c.prev_price_unit, c.prev_price
), deltas AS (
    SELECT run_id, campaign_id, status, error_code, price_unit,
           1 AS n, COALESCE(price, 0) AS amount, (price IS NOT NULL)::int AS priced
    FROM up
    UNION ALL
    SELECT run_id, campaign_id, prev_status, prev_error_code, prev_price_unit,
           -1, -COALESCE(prev_price, 0), -((prev_price IS NOT NULL)::int)
    FROM up WHERE prev_status <> ''
)
INSERT INTO reporting_messagestatuscounter AS k
    (run_id, campaign_id, status, error_code, price_unit, count, price_total, priced)
SELECT run_id, campaign_id, status, error_code, price_unit, sum(n), sum(amount), sum(priced)
FROM deltas
GROUP BY run_id, campaign_id, status, error_code, price_unit
ORDER BY run_id, status, error_code, price_unit
ON CONFLICT (run_id, status, error_code, price_unit) DO UPDATE SET
    count = k.count + EXCLUDED.count,
    price_total = k.price_total + EXCLUDED.price_total,
    priced = k.priced + EXCLUDED.priced
"""

# Messages of recent or active runs whose counted state differs from their state (or is missing).
_SWEEP_CANDIDATES_SQL = """
SELECT m.id
FROM campaigns_recipient r
JOIN campaigns_campaignrun run ON run.id = r.run_id
JOIN messaging_message m ON m.id = r.message_id
LEFT JOIN reporting_countedmessage c ON c.message_id = m.id
WHERE (run.status IN ('running', 'paused') OR run.finished_at >= %(since)s OR m.updated_at >= %(since)s)
  AND (c.message_id IS NULL
       OR (c.status, c.error_code, c.price_unit, c.price)
          IS DISTINCT FROM (m.status, m.error_code, m.price_unit, m.price))
ORDER BY m.id
"""

# The truth the counters must equal: one GROUP BY over the runs' messages.
_RECOUNT_SQL = """
SELECT r.run_id, run.campaign_id, m.status, m.error_code, m.price_unit,
       count(*), COALESCE(sum(m.price), 0), count(m.price)
FROM campaigns_recipient r
JOIN campaigns_campaignrun run ON run.id = r.run_id
JOIN messaging_message m ON m.id = r.message_id
{where}
GROUP BY r.run_id, run.campaign_id, m.status, m.error_code, m.price_unit
"""

CounterKey = tuple[int, str, str, str]  # run_id, status, error_code, price_unit


def counters_sync(message_ids: Iterable[int]) -> None:
    """Bring the counted state of these messages (those of campaign runs; others are ignored) up to date."""
    ids = sorted(set(message_ids))
    for start in range(0, len(ids), SYNC_CHUNK):
        with connection.cursor() as cursor:
            cursor.execute(_SYNC_SQL, {"ids": ids[start : start + SYNC_CHUNK]})


def on_message_status_changed(sender, message_id: int, source_type_id: int | None = None, **kwargs) -> None:
    """Receiver of messaging.signals.message_status_changed (sent after the change committed).

    Only campaign messages are counted: others (transactional sends) return at once, so the
    status webhook pays nothing for them.
    """
    if source_type_id is None:
        return
    try:
        counters_sync([message_id])
    except DatabaseError:  # the sweep will count it; a callback must not fail because of a report
        logger.exception("counting message %s failed; the sweep will catch up", message_id)


def counters_sweep(*, since: datetime | None = None) -> int:
    """Sync messages whose counted state lags (changes made without the signal); returns how many.

    Without ``since`` it starts shortly before the previous sweep (a watermark kept in the cache,
    rebuilt from a fixed window when missing).
    """
    started = timezone.now()
    if since is None:
        last = cache.get(SWEEP_WATERMARK_KEY)
        since = (last - SWEEP_SLACK) if last else started - SWEEP_FIRST_WINDOW
    with connection.cursor() as cursor:
        cursor.execute(_SWEEP_CANDIDATES_SQL, {"since": since})
        ids = [row[0] for row in cursor.fetchall()]
    counters_sync(ids)
    cache.set(SWEEP_WATERMARK_KEY, started, timeout=None)
    return len(ids)


def counters_recount(run_ids: Iterable[int] | None = None) -> None:
    """Rebuild the counters (of these runs, or all) from messages and recipients."""
    runs = sorted(set(run_ids)) if run_ids is not None else None
    where = "WHERE run_id = ANY(%(runs)s)" if runs is not None else ""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "LOCK TABLE reporting_countedmessage, reporting_messagestatuscounter IN SHARE ROW EXCLUSIVE MODE"
        )
        cursor.execute(f"DELETE FROM reporting_messagestatuscounter {where}", {"runs": runs})
        cursor.execute(f"DELETE FROM reporting_countedmessage {where}", {"runs": runs})
        cursor.execute(
            f"""
            INSERT INTO reporting_countedmessage
                (message_id, run_id, campaign_id, status, error_code, price_unit, price,
                 prev_status, prev_error_code, prev_price_unit, prev_price)
            SELECT m.id, r.run_id, run.campaign_id, m.status, m.error_code, m.price_unit, m.price, '', '', '', NULL
            FROM campaigns_recipient r
            JOIN campaigns_campaignrun run ON run.id = r.run_id
            JOIN messaging_message m ON m.id = r.message_id
            {"WHERE r.run_id = ANY(%(runs)s)" if runs is not None else ""}
            """,
            {"runs": runs},
        )
        cursor.execute(
            f"""
            INSERT INTO reporting_messagestatuscounter
                (run_id, campaign_id, status, error_code, price_unit, count, price_total, priced)
            SELECT run_id, campaign_id, status, error_code, price_unit, count(*), COALESCE(sum(price), 0), count(price)
            FROM reporting_countedmessage {where}
            GROUP BY run_id, campaign_id, status, error_code, price_unit
            """,
            {"runs": runs},
        )


def counters_read(run_ids: Iterable[int]) -> dict[CounterKey, tuple[int, Decimal, int]]:
    """The kept counters of these runs: (run, status, error code, unit) -> (count, price total, priced)."""
    from reporting.models import MessageStatusCounter

    rows = MessageStatusCounter.objects.filter(run_id__in=list(run_ids), count__gt=0).values_list(
        "run_id", "status", "error_code", "price_unit", "count", "price_total", "priced"
    )
    return {(r[0], r[1], r[2], r[3]): (r[4], r[5], r[6]) for r in rows}


def counters_recounted(run_ids: Iterable[int]) -> dict[CounterKey, tuple[int, Decimal, int]]:
    """The same figures computed from the messages themselves (what the counters must equal)."""
    with connection.cursor() as cursor:
        cursor.execute(_RECOUNT_SQL.format(where="WHERE r.run_id = ANY(%(runs)s)"), {"runs": list(run_ids)})
        return {(r[0], r[2], r[3], r[4]): (r[5], r[6], r[7]) for r in cursor.fetchall()}
