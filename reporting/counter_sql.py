"""The SQL of reporting's counters (``reporting.counters``): a message's counted state, the one
statement that syncs it and moves every counter, and the recount they must equal.

Statuses, directions and consent are named parameters; every statement here runs with ``ENUMS``
merged into its parameters.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from audience.choices import ConsentStatus
from campaigns.models import RunStatus
from config import sql
from messaging.models import Direction
from reporting.arm_counters import ARM_COUNTER_CTE

ENUMS = {
    "outbound": Direction.OUTBOUND.value,
    "inbound": Direction.INBOUND.value,
    "opted_out": ConsentStatus.OPTED_OUT.value,
    "running": RunStatus.RUNNING.value,
    "paused": RunStatus.PAUSED.value,
}

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
       CASE WHEN m.direction = %(outbound)s THEN date_trunc('minute', COALESCE(m.queued_at, m.sent_at)) END,
       date_trunc('minute', {SENT_TIME_SQL}),
       date_trunc('minute', m.delivered_at),
       date_trunc('minute', m.read_at),
       CASE WHEN m.direction = %(outbound)s THEN date_trunc('minute', m.failed_at) END,
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
         WHERE i.contact_id = r.contact_id AND i.direction = %(inbound)s AND i.created_at > {SENT_TIME_SQL}) AS replies,
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
            WHERE ce.contact_id = r.contact_id AND ce.to_status = %(opted_out)s
              AND ce.created_at >= {SENT_TIME_SQL} AND ce.created_at < {SENT_TIME_SQL} + {OPT_OUT_WINDOW_SQL}
        )::int AS opted_out
    WHERE r.id IS NOT NULL AND {SENT_TIME_SQL} IS NOT NULL
) AS e ON TRUE
"""

COLS = ", ".join(STATE_COLUMNS)
PREV_COLS = ", ".join(f"prev_{name}" for name in PREV_DEFAULTS)
PREV_EMPTY = ", ".join(PREV_DEFAULTS.values())
SETS = ",\n        ".join(
    [f"{name} = EXCLUDED.{name}" for name in CHANGING] + [f"prev_{name} = c.{name}" for name in PREV_DEFAULTS]
)
CHANGED = "({}) IS DISTINCT FROM ({})".format(
    ", ".join("c." + n for n in CHANGING), ", ".join("EXCLUDED." + n for n in CHANGING)
)

# The counter deltas of the rows in ``up`` (the changed counted rows, with their previous state).
COUNTERS_SQL = """
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
        (up.created_minute, (up.direction = %(outbound)s)::int, (up.direction = %(inbound)s)::int, 0, 0),
        (up.prev_created_minute, -(up.direction = %(outbound)s)::int, -(up.direction = %(inbound)s)::int, 0, 0),
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
COUNTERS_SQL += ARM_COUNTER_CTE


def _sync_ids_sql(rows: str, message_is: str, contact_is: str) -> str:
    """The messages a sync covers: these (``rows``), their sibling messages of the same campaign and
    contact (a reply counts through the contact's first message of the campaign), the campaign
    messages of these contacts. ``message_is`` and ``contact_is`` complete a comparison."""
    return f"""
    SELECT {rows} AS id
    UNION
    SELECT r.message_id FROM campaigns_recipient r
    WHERE r.contact_id {contact_is} AND r.message_id IS NOT NULL
    UNION
    SELECT r2.message_id FROM campaigns_recipient r
    JOIN campaigns_campaignrun run ON run.id = r.run_id
    JOIN campaigns_recipient r2 ON r2.contact_id = r.contact_id AND r2.run_id <> r.run_id
    JOIN campaigns_campaignrun run2 ON run2.id = r2.run_id AND run2.campaign_id = run.campaign_id
    WHERE r.message_id {message_is} AND r2.message_id IS NOT NULL
"""


# Any number of messages and contacts (arrays): planned at each call, which a batch amortises.
SYNC_IDS_SQL = _sync_ids_sql("unnest(%(ids)s::bigint[])", "= ANY(%(ids)s::bigint[])", "= ANY(%(contacts)s::bigint[])")
# At most one message (``%(id)s``) and one contact (``%(contact)s``), either NULL: a status
# callback, an inbound message, a consent change. With scalar parameters a generic plan costs what
# a custom one does, so the PL/pgSQL function below keeps one (planning the whole statement cost
# several times more than running it).
SYNC_ONE_IDS_SQL = _sync_ids_sql("%(id)s::bigint", "= %(id)s::bigint", "= %(contact)s::bigint")


def sync_sql(ids_sql: str) -> str:
    """One statement: the messages of ``ids_sql``, their current state, the upsert, every counter."""
    return f"""
WITH ids AS ({ids_sql}), cur AS (
    {STATE_SQL}
    WHERE m.id IN (SELECT id FROM ids)
    ORDER BY m.id
    FOR SHARE OF m
), up AS (
    INSERT INTO reporting_countedmessage AS c ({COLS}, {PREV_COLS})
    SELECT *, {PREV_EMPTY} FROM cur
    ORDER BY 1
    ON CONFLICT (message_id) DO UPDATE SET
        {SETS}
    WHERE {CHANGED}
    RETURNING c.*
), {COUNTERS_SQL.strip()}
SELECT count(*) FROM up
"""


SYNC_SQL = sync_sql(SYNC_IDS_SQL)
SYNC_ONE_SQL = sync_sql(SYNC_ONE_IDS_SQL)


def _sync_one_function() -> tuple[str, str]:
    """(name, CREATE statement) of a PL/pgSQL function running SYNC_ONE_SQL for (p_id, p_contact).

    PL/pgSQL keeps its statements' plans for the server connection's life, so the sync is planned
    once per connection even behind a pooler in transaction mode, where nothing can be prepared.
    The name carries a hash of the body: code and function never disagree (``post_migrate``
    creates the function this code names; until it exists, the statement runs as it is).
    """
    body = SYNC_ONE_SQL.replace("%(id)s", "p_id").replace("%(contact)s", "p_contact")
    for name, value in ENUMS.items():
        body = body.replace(f"%({name})s", sql.literal(value))
    body = body.replace("SELECT count(*) FROM up", "SELECT count(*) INTO changed FROM up")
    if "%(" in body or "INTO changed" not in body:
        raise AssertionError("the sync statement's parameters changed: update _sync_one_function")
    name = "reporting_sync_one_" + hashlib.sha256(body.encode()).hexdigest()[:12]
    create = (
        f"CREATE OR REPLACE FUNCTION {name}(p_id bigint, p_contact bigint) RETURNS bigint "
        f"LANGUAGE plpgsql AS $sync$\nDECLARE changed bigint;\nBEGIN\n{body.strip()};\nRETURN changed;\nEND\n$sync$"
    )
    return name, create


SYNC_ONE_FUNCTION, SYNC_ONE_FUNCTION_CREATE = _sync_one_function()
SYNC_ONE_FUNCTION_PREFIX = "reporting_sync_one_"


# Messages whose counted state lags what their own row says (or is missing): those created
# recently, and the campaign messages of live or recently finished runs.
SWEEP_CANDIDATES_SQL = f"""
WITH msgs AS (
    SELECT m.id FROM messaging_message m WHERE m.created_at >= %(lookback)s
    UNION
    SELECT r.message_id FROM campaigns_recipient r
    JOIN campaigns_campaignrun run ON run.id = r.run_id
    JOIN messaging_message m ON m.id = r.message_id
    WHERE run.status IN (%(running)s, %(paused)s) OR run.finished_at >= %(since)s OR m.updated_at >= %(since)s
), cur AS (
    SELECT m.id, m.status, m.error_code, m.price_unit, m.price,
           date_trunc('minute', m.created_at) AS created_minute,
           CASE WHEN m.direction = %(outbound)s THEN date_trunc('minute', COALESCE(m.queued_at, m.sent_at)) END
               AS accepted_minute,
           date_trunc('minute', {SENT_TIME_SQL}) AS sent_minute,
           date_trunc('minute', m.delivered_at) AS delivered_minute,
           date_trunc('minute', m.read_at) AS read_minute,
           CASE WHEN m.direction = %(outbound)s THEN date_trunc('minute', m.failed_at) END AS failed_minute
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
SWEEP_CONTACTS_SQL = """
SELECT contact_id FROM messaging_message
WHERE direction = %(inbound)s AND created_at >= %(since)s AND contact_id IS NOT NULL
UNION
SELECT contact_id FROM audience_consentevent WHERE created_at >= %(since)s AND contact_id IS NOT NULL
"""

# The truth the status counters must equal: one GROUP BY over the runs' messages.
RECOUNT_SQL = """
SELECT r.run_id, run.campaign_id, m.status, m.error_code, m.price_unit,
       count(*), COALESCE(sum(m.price), 0), count(m.price)
FROM campaigns_recipient r
JOIN campaigns_campaignrun run ON run.id = r.run_id
JOIN messaging_message m ON m.id = r.message_id
{where}
GROUP BY r.run_id, run.campaign_id, m.status, m.error_code, m.price_unit
"""

MINUTES_FROM_COUNTED_SQL = """
SELECT minute, sum(o), sum(i), sum(a), sum(f)
FROM reporting_countedmessage CROSS JOIN LATERAL (VALUES
    (created_minute, (direction = %(outbound)s)::int, (direction = %(inbound)s)::int, 0, 0),
    (accepted_minute, 0, 0, 1, 0), (failed_minute, 0, 0, 0, 1)) AS v (minute, o, i, a, f)
WHERE minute IS NOT NULL
GROUP BY minute
"""
