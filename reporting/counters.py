"""Reporting counters that stay exactly equal to a recount.

Each message has one ``CountedMessage`` row holding the state it is counted in: its status, error
code and price, the minutes it was created, accepted, sent, delivered, read and failed in, its
delivery-time bucket, and for a campaign recipient its replies and whether it opted out within
72 h. Syncing a message recomputes that state from the raw rows, upserts the row and moves each
counter from the old state to the new one, all in one statement: the message row is read
``FOR SHARE`` (no status change can commit until the statement ends), and the upsert's
``ON CONFLICT`` sees the latest counted state, so concurrent or repeated syncs of one message count
it once (a duplicate webhook, which changes nothing, writes nothing). Counter rows are only ever
changed by ``INSERT ... ON CONFLICT DO UPDATE SET n = n + EXCLUDED.n``.

Counters kept (all rebuilt by ``counters_recount``):
- ``MessageStatusCounter``: run, status, error code, currency -> count, price total (summary funnel,
  failures by code, cost);
- ``RunMinuteCounter``: run, minute -> sent, delivered, read, failed (the timeline; hours are sums
  of minutes);
- ``DeliveryTimeCounter``: run, delivery-time bucket -> count (median time to deliver; see
  ``DELIVERY_BUCKET_SQL``);
- ``RunEngagementCounter``: run -> replies, replies to the contact's first message of the campaign,
  repliers, opt-outs within 72 h;
- ``MinuteCounter``: minute -> outbound and inbound messages created, accepted by the provider,
  failed (every message, campaign or not: the dashboard's rates and 24 h totals);
- ``ContactTotal``: contacts and opted-out contacts, kept by triggers (migration 0004).

Doors that sync: ``message_status_changed`` and ``message_statuses_changed`` (campaign messages,
right after the change commits), ``inbound_message_received`` and audience's ``consent_changed``
(the contact's campaign messages, for replies and opt-outs), and ``counters_sweep`` (beat), for
changes made without a signal (message creation, send results, transactional messages, imports).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from messaging.models import Message
from reporting.arm_conversions import arm_conversions_recount
from reporting.arm_counters import ARM_COUNTER_CTE, ARM_RECOUNT_SQL
from reporting.models import MessageStatusCounter

logger = logging.getLogger(__name__)

SYNC_CHUNK = 1000
SWEEP_SLACK = timedelta(minutes=2)
SWEEP_FIRST_WINDOW = timedelta(minutes=15)
SWEEP_WATERMARK_KEY = "reporting:counters:swept_at"
# Messages created this long ago or less are compared with their counted state by every sweep
# (the dashboard's rates and 24 h totals count them); campaign messages of live runs always are.
SWEEP_MESSAGE_LOOKBACK = timedelta(days=2)
# An opt-out counts against a message when it comes this soon after the message was sent.
OPT_OUT_WINDOW = timedelta(hours=72)
OPT_OUT_WINDOW_SQL = f"interval '{int(OPT_OUT_WINDOW.total_seconds())} seconds'"

# Delivery time as a bucket: whole seconds below 1,000 s, three significant figures above
# (1,234.5 s -> 1,230). A median from these buckets is exact when times are whole seconds under
# 1,000 s, otherwise within 0.5 s or 0.5 %.
DELIVERY_BUCKET_SQL = """
    CASE WHEN {d} < 999.5 THEN round({d}) ELSE round({d}, 2 - floor(log({d}))::int) END::bigint
"""


def sent_time_sql(alias: str = "m") -> str:
    """When a message reached the carrier: its sent callback, or a later one when "sent" never came."""
    return f"COALESCE({alias}.sent_at, {alias}.delivered_at, {alias}.read_at)"


SENT_TIME_SQL = sent_time_sql()

# Time to deliver, in seconds: from when the request left for the provider (sending_at, exact and
# ours; sent_at for a message that has none) to delivered_at. The one definition, with the
# selectors' exact median; the condition says which messages have one.
DELIVERY_FROM_SQL = "COALESCE(m.sending_at, m.sent_at)"
DELIVERY_SECONDS_SQL = f"GREATEST(EXTRACT(EPOCH FROM m.delivered_at - {DELIVERY_FROM_SQL}), 0)"
HAS_DELIVERY_SECONDS_SQL = f"m.delivered_at IS NOT NULL AND {DELIVERY_FROM_SQL} IS NOT NULL"

# Counted state, in this order, for the messages of ``{where}`` (m: the message, r: its recipient).
STATE_COLUMNS = [
    "message_id", "run_id", "campaign_id", "direction", "status", "error_code", "price_unit", "price",
    "created_minute", "accepted_minute", "sent_minute", "delivered_minute", "read_minute", "failed_minute",
    "deliver_seconds", "replies", "replies_first", "opted_out_72h",
]  # fmt: skip
# What a change is detected on (identity columns excluded).
CHANGING = STATE_COLUMNS[4:]
# Columns whose previous value the upsert keeps, to take off the old counts.
PREV_DEFAULTS = {
    "status": "''", "error_code": "''", "price_unit": "''", "price": "NULL::numeric",
    "created_minute": "NULL::timestamptz", "accepted_minute": "NULL::timestamptz",
    "sent_minute": "NULL::timestamptz", "delivered_minute": "NULL::timestamptz", "read_minute": "NULL::timestamptz",
    "failed_minute": "NULL::timestamptz", "deliver_seconds": "NULL::bigint", "replies": "0", "replies_first": "0",
    "opted_out_72h": "0",
}  # fmt: skip

STATE_SQL = f"""
SELECT m.id, r.run_id, run.campaign_id, m.direction, m.status, m.error_code, m.price_unit, m.price,
       date_trunc('minute', m.created_at),
       CASE WHEN m.direction = 'outbound' THEN date_trunc('minute', COALESCE(m.queued_at, m.sent_at)) END,
       date_trunc('minute', {SENT_TIME_SQL}),
       date_trunc('minute', m.delivered_at),
       date_trunc('minute', m.read_at),
       CASE WHEN m.direction = 'outbound' THEN date_trunc('minute', m.failed_at) END,
       CASE WHEN r.id IS NOT NULL AND {HAS_DELIVERY_SECONDS_SQL}
            THEN {DELIVERY_BUCKET_SQL.format(d=DELIVERY_SECONDS_SQL).strip()} END,
       COALESCE(e.replies, 0),
       CASE WHEN e.first THEN e.replies ELSE 0 END,
       COALESCE(e.opted_out, 0)
FROM messaging_message m
LEFT JOIN campaigns_recipient r ON r.message_id = m.id
LEFT JOIN campaigns_campaignrun run ON run.id = r.run_id
LEFT JOIN LATERAL (
    SELECT
        -- Inbound messages from the recipient after this message was sent.
        (SELECT count(*) FROM messaging_message i
         WHERE i.contact_id = r.contact_id AND i.direction = 'inbound' AND i.created_at > {SENT_TIME_SQL}) AS replies,
        -- Whether this is the contact's first sent message of the campaign: a campaign's replies
        -- count each inbound message once, through that message.
        NOT EXISTS (
            SELECT 1 FROM campaigns_recipient r2
            JOIN campaigns_campaignrun run2 ON run2.id = r2.run_id
            JOIN messaging_message m2 ON m2.id = r2.message_id
            WHERE r2.contact_id = r.contact_id AND run2.campaign_id = run.campaign_id AND r2.id <> r.id
              AND COALESCE(m2.sent_at, m2.delivered_at, m2.read_at) IS NOT NULL
              AND ({sent_time_sql("m2")}, m2.id) < ({SENT_TIME_SQL}, m.id)
        ) AS first,
        -- An opt-out of the recipient within 72 h after this message was sent.
        EXISTS (
            SELECT 1 FROM audience_consentevent ce
            WHERE ce.contact_id = r.contact_id AND ce.to_status = 'opted_out'
              AND ce.created_at >= {SENT_TIME_SQL} AND ce.created_at < {SENT_TIME_SQL} + {OPT_OUT_WINDOW_SQL}
        )::int AS opted_out
    WHERE r.id IS NOT NULL AND {SENT_TIME_SQL} IS NOT NULL
) AS e ON TRUE
"""

_COLS = ", ".join(STATE_COLUMNS)
_PREV_COLS = ", ".join(f"prev_{name}" for name in PREV_DEFAULTS)
_PREV_EMPTY = ", ".join(PREV_DEFAULTS.values())
_SETS = ",\n        ".join(
    [f"{name} = EXCLUDED.{name}" for name in CHANGING] + [f"prev_{name} = c.{name}" for name in PREV_DEFAULTS]
)
_CHANGED = "({}) IS DISTINCT FROM ({})".format(
    ", ".join("c." + n for n in CHANGING), ", ".join("EXCLUDED." + n for n in CHANGING)
)

# The counter deltas of the rows in ``up`` (the changed counted rows, with their previous state).
_COUNTERS_SQL = """
st AS (
    INSERT INTO reporting_messagestatuscounter AS k
        (run_id, campaign_id, status, error_code, price_unit, count, price_total, priced)
    SELECT run_id, campaign_id, status, error_code, price_unit, sum(n), sum(amount), sum(priced)
    FROM (
        SELECT run_id, campaign_id, status, error_code, price_unit,
               1 AS n, COALESCE(price, 0) AS amount, (price IS NOT NULL)::int AS priced
        FROM up WHERE run_id IS NOT NULL
        UNION ALL
        SELECT run_id, campaign_id, prev_status, prev_error_code, prev_price_unit,
               -1, -COALESCE(prev_price, 0), -((prev_price IS NOT NULL)::int)
        FROM up WHERE run_id IS NOT NULL AND prev_status <> ''
    ) AS d
    GROUP BY run_id, campaign_id, status, error_code, price_unit
    HAVING sum(n) <> 0 OR sum(amount) <> 0 OR sum(priced) <> 0
    ORDER BY run_id, status, error_code, price_unit
    ON CONFLICT (run_id, status, error_code, price_unit) DO UPDATE SET
        count = k.count + EXCLUDED.count,
        price_total = k.price_total + EXCLUDED.price_total,
        priced = k.priced + EXCLUDED.priced
), tl AS (
    INSERT INTO reporting_runminutecounter AS k (run_id, campaign_id, minute, sent, delivered, read, failed)
    SELECT up.run_id, up.campaign_id, v.minute, sum(v.s), sum(v.d), sum(v.r), sum(v.f)
    FROM up CROSS JOIN LATERAL (VALUES
        (up.sent_minute, 1, 0, 0, 0), (up.prev_sent_minute, -1, 0, 0, 0),
        (up.delivered_minute, 0, 1, 0, 0), (up.prev_delivered_minute, 0, -1, 0, 0),
        (up.read_minute, 0, 0, 1, 0), (up.prev_read_minute, 0, 0, -1, 0),
        (up.failed_minute, 0, 0, 0, 1), (up.prev_failed_minute, 0, 0, 0, -1)
    ) AS v (minute, s, d, r, f)
    WHERE up.run_id IS NOT NULL AND v.minute IS NOT NULL
    GROUP BY up.run_id, up.campaign_id, v.minute
    HAVING sum(v.s) <> 0 OR sum(v.d) <> 0 OR sum(v.r) <> 0 OR sum(v.f) <> 0
    ORDER BY 1, 3
    ON CONFLICT (run_id, minute) DO UPDATE SET
        sent = k.sent + EXCLUDED.sent, delivered = k.delivered + EXCLUDED.delivered,
        read = k.read + EXCLUDED.read, failed = k.failed + EXCLUDED.failed
), dt AS (
    INSERT INTO reporting_deliverytimecounter AS k (run_id, campaign_id, seconds, count)
    SELECT up.run_id, up.campaign_id, v.seconds, sum(v.n)
    FROM up CROSS JOIN LATERAL (VALUES (up.deliver_seconds, 1), (up.prev_deliver_seconds, -1)) AS v (seconds, n)
    WHERE up.run_id IS NOT NULL AND v.seconds IS NOT NULL
    GROUP BY up.run_id, up.campaign_id, v.seconds
    HAVING sum(v.n) <> 0
    ORDER BY 1, 3
    ON CONFLICT (run_id, seconds) DO UPDATE SET count = k.count + EXCLUDED.count
), en AS (
    INSERT INTO reporting_runengagementcounter AS k
        (run_id, campaign_id, replies, replies_first, repliers, opt_outs_72h)
    SELECT run_id, campaign_id, sum(replies - prev_replies), sum(replies_first - prev_replies_first),
           sum((replies > 0)::int - (prev_replies > 0)::int), sum(opted_out_72h - prev_opted_out_72h)
    FROM up WHERE run_id IS NOT NULL
    GROUP BY run_id, campaign_id
    HAVING sum(replies - prev_replies) <> 0 OR sum(replies_first - prev_replies_first) <> 0
        OR sum((replies > 0)::int - (prev_replies > 0)::int) <> 0 OR sum(opted_out_72h - prev_opted_out_72h) <> 0
    ORDER BY 1
    ON CONFLICT (run_id) DO UPDATE SET
        replies = k.replies + EXCLUDED.replies, replies_first = k.replies_first + EXCLUDED.replies_first,
        repliers = k.repliers + EXCLUDED.repliers, opt_outs_72h = k.opt_outs_72h + EXCLUDED.opt_outs_72h
), mi AS (
    INSERT INTO reporting_minutecounter AS k (minute, outbound, inbound, accepted, failed)
    SELECT v.minute, sum(v.o), sum(v.i), sum(v.a), sum(v.f)
    FROM up CROSS JOIN LATERAL (VALUES
        (up.created_minute, (up.direction = 'outbound')::int, (up.direction = 'inbound')::int, 0, 0),
        (up.prev_created_minute, -(up.direction = 'outbound')::int, -(up.direction = 'inbound')::int, 0, 0),
        (up.accepted_minute, 0, 0, 1, 0), (up.prev_accepted_minute, 0, 0, -1, 0),
        (up.failed_minute, 0, 0, 0, 1), (up.prev_failed_minute, 0, 0, 0, -1)
    ) AS v (minute, o, i, a, f)
    WHERE v.minute IS NOT NULL
    GROUP BY v.minute
    HAVING sum(v.o) <> 0 OR sum(v.i) <> 0 OR sum(v.a) <> 0 OR sum(v.f) <> 0
    ORDER BY 1
    ON CONFLICT (minute) DO UPDATE SET
        outbound = k.outbound + EXCLUDED.outbound, inbound = k.inbound + EXCLUDED.inbound,
        accepted = k.accepted + EXCLUDED.accepted, failed = k.failed + EXCLUDED.failed
),"""
_COUNTERS_SQL += ARM_COUNTER_CTE

# One statement: which messages (these, their sibling messages of the same campaign and contact,
# the campaign messages of these contacts), their current state, the upsert, every counter.
_SYNC_SQL = f"""
WITH ids AS (
    SELECT unnest(%(ids)s::bigint[]) AS id
    UNION
    SELECT r.message_id FROM campaigns_recipient r
    WHERE r.contact_id = ANY(%(contacts)s::bigint[]) AND r.message_id IS NOT NULL
    UNION
    SELECT r2.message_id FROM campaigns_recipient r
    JOIN campaigns_campaignrun run ON run.id = r.run_id
    JOIN campaigns_recipient r2 ON r2.contact_id = r.contact_id AND r2.run_id <> r.run_id
    JOIN campaigns_campaignrun run2 ON run2.id = r2.run_id AND run2.campaign_id = run.campaign_id
    WHERE r.message_id = ANY(%(ids)s::bigint[]) AND r2.message_id IS NOT NULL
), cur AS (
    {STATE_SQL}
    WHERE m.id IN (SELECT id FROM ids)
    ORDER BY m.id
    FOR SHARE OF m
), up AS (
    INSERT INTO reporting_countedmessage AS c ({_COLS}, {_PREV_COLS})
    SELECT *, {_PREV_EMPTY} FROM cur
    ORDER BY 1
    ON CONFLICT (message_id) DO UPDATE SET
        {_SETS}
    WHERE {_CHANGED}
    RETURNING c.*
), {_COUNTERS_SQL.strip()}
SELECT count(*) FROM up
"""

# Messages whose counted state lags what their own row says (or is missing): those created
# recently, and the campaign messages of live or recently finished runs.
_SWEEP_CANDIDATES_SQL = f"""
WITH msgs AS (
    SELECT m.id FROM messaging_message m WHERE m.created_at >= %(lookback)s
    UNION
    SELECT r.message_id FROM campaigns_recipient r
    JOIN campaigns_campaignrun run ON run.id = r.run_id
    JOIN messaging_message m ON m.id = r.message_id
    WHERE run.status IN ('running', 'paused') OR run.finished_at >= %(since)s OR m.updated_at >= %(since)s
), cur AS (
    SELECT m.id, m.status, m.error_code, m.price_unit, m.price,
           date_trunc('minute', m.created_at) AS created_minute,
           CASE WHEN m.direction = 'outbound' THEN date_trunc('minute', COALESCE(m.queued_at, m.sent_at)) END
               AS accepted_minute,
           date_trunc('minute', {SENT_TIME_SQL}) AS sent_minute,
           date_trunc('minute', m.delivered_at) AS delivered_minute,
           date_trunc('minute', m.read_at) AS read_minute,
           CASE WHEN m.direction = 'outbound' THEN date_trunc('minute', m.failed_at) END AS failed_minute
    FROM messaging_message m WHERE m.id IN (SELECT id FROM msgs)
)
SELECT cur.id FROM cur LEFT JOIN reporting_countedmessage c ON c.message_id = cur.id
WHERE c.message_id IS NULL
   OR (c.status, c.error_code, c.price_unit, c.price, c.created_minute, c.accepted_minute, c.sent_minute,
       c.delivered_minute, c.read_minute, c.failed_minute)
      IS DISTINCT FROM
      (cur.status, cur.error_code, cur.price_unit, cur.price, cur.created_minute, cur.accepted_minute,
       cur.sent_minute, cur.delivered_minute, cur.read_minute, cur.failed_minute)
ORDER BY cur.id
"""

# Contacts whose replies or opt-outs may have changed since the last sweep.
_SWEEP_CONTACTS_SQL = """
SELECT contact_id FROM messaging_message
WHERE direction = 'inbound' AND created_at >= %(since)s AND contact_id IS NOT NULL
UNION
SELECT contact_id FROM audience_consentevent WHERE created_at >= %(since)s AND contact_id IS NOT NULL
"""

# The truth the status counters must equal: one GROUP BY over the runs' messages.
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
RUN_TABLES = (
    "reporting_messagestatuscounter",
    "reporting_runminutecounter",
    "reporting_deliverytimecounter",
    "reporting_runengagementcounter",
    "reporting_armcounter",
)


def counters_sync(message_ids: Iterable[int] = (), *, contact_ids: Iterable[int] = ()) -> int:
    """Bring the counted state of these messages, and of these contacts' campaign messages, up to date.

    Returns how many counted rows changed.
    """
    ids, contacts = sorted(set(message_ids)), sorted(set(contact_ids))
    changed = 0
    for start in range(0, max(len(ids), len(contacts), 1), SYNC_CHUNK):
        chunk, chunk_contacts = ids[start : start + SYNC_CHUNK], contacts[start : start + SYNC_CHUNK]
        if not chunk and not chunk_contacts:
            break
        with connection.cursor() as cursor:
            cursor.execute(_SYNC_SQL, {"ids": chunk, "contacts": chunk_contacts})
            changed += cursor.fetchone()[0]
    return changed


def _sync_quietly(what: str, **kwargs) -> None:
    try:
        counters_sync(**kwargs)
    except DatabaseError:  # the sweep will count it; a callback must not fail because of a report
        logger.exception("counting %s failed; the sweep will catch up", what)


def on_message_status_changed(sender, message_id: int, source_type_id: int | None = None, **kwargs) -> None:
    """Receiver of messaging.signals.message_status_changed (sent after the change committed).

    Only messages something caused (campaign recipients) are synced here: others (transactional
    sends) return at once, so the status webhook pays nothing for them; the sweep counts them.
    """
    if source_type_id is None:
        return
    _sync_quietly(f"message {message_id}", message_ids=[message_id])


def on_message_statuses_changed(sender, message_ids: list[int], **kwargs) -> None:
    """Receiver of messaging.signals.message_statuses_changed (a batch of campaign sends)."""
    _sync_quietly(f"{len(message_ids)} messages", message_ids=message_ids)


def on_inbound_message_received(sender, message_id: int, **kwargs) -> None:
    """An inbound message: count it, and the replies of its contact's campaign messages."""
    contact_id = Message.objects.filter(pk=message_id).values_list("contact_id", flat=True).first()
    _sync_quietly(f"inbound {message_id}", message_ids=[message_id], contact_ids=[contact_id] if contact_id else [])


def on_consent_changed(sender, contact_id: int, to_status: str, **kwargs) -> None:
    """An opt-out counts for the contact's campaign messages sent in the 72 h before it."""
    if to_status == "opted_out":
        _sync_quietly(f"opt-out of contact {contact_id}", contact_ids=[contact_id])


def counters_sweep(*, since: datetime | None = None) -> int:
    """Sync messages whose counted state lags (changes made without a signal); returns how many changed.

    Without ``since`` it starts shortly before the previous sweep (a watermark kept in the cache,
    rebuilt from a fixed window when missing). Contacts with inbound messages or consent events
    since then are synced too, so replies and opt-outs written without a signal (imports) count.
    """
    started = timezone.now()
    if since is None:
        last = cache.get(SWEEP_WATERMARK_KEY)
        since = (last - SWEEP_SLACK) if last else started - SWEEP_FIRST_WINDOW
    params = {"since": since, "lookback": started - SWEEP_MESSAGE_LOOKBACK}
    with connection.cursor() as cursor:
        cursor.execute(_SWEEP_CANDIDATES_SQL, params)
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute(_SWEEP_CONTACTS_SQL, params)
        contacts = [row[0] for row in cursor.fetchall()]
    changed = counters_sync(ids, contact_ids=contacts)
    cache.set(SWEEP_WATERMARK_KEY, started, timeout=None)
    return changed


def _aggregate_run_counters(where: str, params: dict) -> None:
    """Fill the per-run counter tables from the counted rows matching ``where``."""
    statements = [
        f"""INSERT INTO reporting_messagestatuscounter
                (run_id, campaign_id, status, error_code, price_unit, count, price_total, priced)
            SELECT run_id, campaign_id, status, error_code, price_unit, count(*), COALESCE(sum(price), 0), count(price)
            FROM reporting_countedmessage WHERE run_id IS NOT NULL {where}
            GROUP BY run_id, campaign_id, status, error_code, price_unit""",
        f"""INSERT INTO reporting_runminutecounter (run_id, campaign_id, minute, sent, delivered, read, failed)
            SELECT run_id, campaign_id, minute, sum(s), sum(d), sum(r), sum(f)
            FROM reporting_countedmessage CROSS JOIN LATERAL (VALUES
                (sent_minute, 1, 0, 0, 0), (delivered_minute, 0, 1, 0, 0),
                (read_minute, 0, 0, 1, 0), (failed_minute, 0, 0, 0, 1)) AS v (minute, s, d, r, f)
            WHERE run_id IS NOT NULL AND minute IS NOT NULL {where}
            GROUP BY run_id, campaign_id, minute""",
        f"""INSERT INTO reporting_deliverytimecounter (run_id, campaign_id, seconds, count)
            SELECT run_id, campaign_id, deliver_seconds, count(*) FROM reporting_countedmessage
            WHERE run_id IS NOT NULL AND deliver_seconds IS NOT NULL {where}
            GROUP BY run_id, campaign_id, deliver_seconds""",
        f"""INSERT INTO reporting_runengagementcounter
                (run_id, campaign_id, replies, replies_first, repliers, opt_outs_72h)
            SELECT run_id, campaign_id, sum(replies), sum(replies_first), count(*) FILTER (WHERE replies > 0),
                   sum(opted_out_72h)
            FROM reporting_countedmessage WHERE run_id IS NOT NULL {where}
            GROUP BY run_id, campaign_id""",
    ]
    statements.append(ARM_RECOUNT_SQL.format(where=where))
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, params)


_MINUTES_FROM_COUNTED_SQL = """
SELECT minute, sum(o), sum(i), sum(a), sum(f)
FROM reporting_countedmessage CROSS JOIN LATERAL (VALUES
    (created_minute, (direction = 'outbound')::int, (direction = 'inbound')::int, 0, 0),
    (accepted_minute, 0, 0, 1, 0), (failed_minute, 0, 0, 0, 1)) AS v (minute, o, i, a, f)
WHERE minute IS NOT NULL
GROUP BY minute
"""


def counters_recount(run_ids: Iterable[int] | None = None) -> None:
    """Rebuild the counters (of these runs, or all, contact totals included) from the raw rows."""
    runs = sorted(set(run_ids)) if run_ids is not None else None
    params = {"runs": runs}
    tables = ["reporting_countedmessage", *RUN_TABLES, "reporting_minutecounter"]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {', '.join(tables)} IN SHARE ROW EXCLUSIVE MODE")
        if runs is None:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
            cursor.execute(
                f"INSERT INTO reporting_countedmessage ({_COLS}, {_PREV_COLS}) "
                f"SELECT *, {_PREV_EMPTY} FROM ({STATE_SQL}) AS s"
            )
            _aggregate_run_counters("", params)
            # Exact at this instant: writers of contacts wait for the count (a moment per million).
            cursor.execute("LOCK TABLE audience_contact IN SHARE MODE")
            cursor.execute("DELETE FROM reporting_contacttotal")
            cursor.execute(
                """INSERT INTO reporting_contacttotal (contacts, opted_out)
                   SELECT count(*), count(*) FILTER (WHERE consent_status = 'opted_out') FROM audience_contact"""
            )
        else:
            for table in ["reporting_countedmessage", *RUN_TABLES]:
                cursor.execute(f"DELETE FROM {table} WHERE run_id = ANY(%(runs)s)", params)
            cursor.execute(
                f"""INSERT INTO reporting_countedmessage ({_COLS}, {_PREV_COLS})
                    SELECT *, {_PREV_EMPTY} FROM ({STATE_SQL} WHERE r.run_id = ANY(%(runs)s)) AS s
                    ON CONFLICT (message_id) DO NOTHING""",
                params,
            )
            _aggregate_run_counters("AND run_id = ANY(%(runs)s)", params)
            cursor.execute("DELETE FROM reporting_minutecounter")
        cursor.execute(
            "INSERT INTO reporting_minutecounter (minute, outbound, inbound, accepted, failed)"
            + _MINUTES_FROM_COUNTED_SQL
        )
        arm_conversions_recount(cursor, runs)


def counters_read(run_ids: Iterable[int]) -> dict[CounterKey, tuple[int, Decimal, int]]:
    """The kept counters of these runs: (run, status, error code, unit) -> (count, price total, priced)."""
    rows = MessageStatusCounter.objects.filter(run_id__in=list(run_ids), count__gt=0).values_list(
        "run_id", "status", "error_code", "price_unit", "count", "price_total", "priced"
    )
    return {(r[0], r[1], r[2], r[3]): (r[4], r[5], r[6]) for r in rows}


def counters_recounted(run_ids: Iterable[int]) -> dict[CounterKey, tuple[int, Decimal, int]]:
    """The same figures computed from the messages themselves (what the counters must equal)."""
    with connection.cursor() as cursor:
        cursor.execute(_RECOUNT_SQL.format(where="WHERE r.run_id = ANY(%(runs)s)"), {"runs": list(run_ids)})
        return {(r[0], r[2], r[3], r[4]): (r[5], r[6], r[7]) for r in cursor.fetchall()}
