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
  ``counter_sql.DELIVERY_BUCKET_SQL``);
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

import contextlib
import logging
import math
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg.errors
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, ProgrammingError, connection, connections, transaction
from django.utils import timezone

from audience.choices import ConsentStatus
from config import sql
from messaging.models import Message
from reporting import counter_sql
from reporting.arm_conversions import arm_conversions_recount
from reporting.arm_counters import ARM_RECOUNT_SQL
from reporting.models import MessageStatusCounter

logger = logging.getLogger(__name__)

SYNC_CHUNK = 1000
SWEEP_SLACK = timedelta(minutes=2)
SWEEP_FIRST_WINDOW = timedelta(minutes=15)
SWEEP_WATERMARK_KEY = "reporting:counters:swept_at"
# Messages created this long ago or less are compared with their counted state by every sweep
# (the dashboard's rates and 24 h totals count them); campaign messages of live runs always are.
SWEEP_MESSAGE_LOOKBACK = timedelta(days=2)

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
    if len(ids) <= 1 and len(contacts) <= 1 and (ids or contacts):  # a callback's: planned once per connection
        return _sync_one(ids[0] if ids else None, contacts[0] if contacts else None)
    changed = 0
    for start in range(0, max(len(ids), len(contacts), 1), SYNC_CHUNK):
        chunk, chunk_contacts = ids[start : start + SYNC_CHUNK], contacts[start : start + SYNC_CHUNK]
        if not chunk and not chunk_contacts:
            break
        with connection.cursor() as cursor:
            params = {"ids": chunk, "contacts": chunk_contacts, **counter_sql.ENUMS}
            cursor.execute(counter_sql.SYNC_SQL, params)
            changed += cursor.fetchone()[0]
    return changed


def _sync_one(message_id: int | None, contact_id: int | None) -> int:
    """One message's and one contact's sync: the reporting function, else (not created yet) its statement."""
    if _sync_function_ready():
        try:
            # In a transaction, a savepoint: a missing function must not abort the caller's work.
            with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
                row = sql.fetch_one_prepared(
                    f"SELECT {counter_sql.SYNC_ONE_FUNCTION}(%s, %s)", [message_id, contact_id]
                )
            return row[0] if row else 0
        except ProgrammingError as exc:  # dropped since it was seen (newer code migrated): the statement, look again
            if not isinstance(exc.__cause__, psycopg.errors.UndefinedFunction):
                raise
            _function_seen[connection.alias] = time.monotonic()
    params = {"id": message_id, "contact": contact_id, **counter_sql.ENUMS}
    row = sql.fetch_one_prepared(counter_sql.SYNC_ONE_SQL, params)
    return row[0] if row else 0


_function_seen: dict[str, float] = {}  # database alias -> when the function was last looked for, inf: found
FUNCTION_LOOK_AGAIN = 60.0  # seconds before a missing function is looked for again


def _sync_function_ready() -> bool:
    seen = _function_seen.get(connection.alias, -math.inf)
    if seen == math.inf:
        return True
    if time.monotonic() - seen < FUNCTION_LOOK_AGAIN:
        return False
    signature = f"{counter_sql.SYNC_ONE_FUNCTION}(bigint, bigint)"
    row = sql.fetch_one_prepared("SELECT to_regprocedure(%s) IS NOT NULL", [signature])
    _function_seen[connection.alias] = math.inf if row and row[0] else time.monotonic()
    return _function_seen[connection.alias] == math.inf


def sync_function_create(using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """Create the sync function this code names and drop those of earlier code (``post_migrate``)."""
    with connections[using].cursor() as cursor:
        cursor.execute(counter_sql.SYNC_ONE_FUNCTION_CREATE)
        cursor.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND starts_with(p.proname, %s) AND p.proname <> %s",
            [counter_sql.SYNC_ONE_FUNCTION_PREFIX, counter_sql.SYNC_ONE_FUNCTION],
        )
        for (stale,) in cursor.fetchall():
            cursor.execute(f"DROP FUNCTION IF EXISTS {stale}")
    _function_seen.pop(using, None)


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
    if to_status == ConsentStatus.OPTED_OUT:
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
    params = {"since": since, "lookback": started - SWEEP_MESSAGE_LOOKBACK, **counter_sql.ENUMS}
    with connection.cursor() as cursor:
        cursor.execute(counter_sql.SWEEP_CANDIDATES_SQL, params)
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute(counter_sql.SWEEP_CONTACTS_SQL, params)
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


def counters_recount(run_ids: Iterable[int] | None = None) -> None:
    """Rebuild the counters (of these runs, or all, contact totals included) from the raw rows."""
    runs = sorted(set(run_ids)) if run_ids is not None else None
    params = {"runs": runs, **counter_sql.ENUMS}
    tables = ["reporting_countedmessage", *RUN_TABLES, "reporting_minutecounter"]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {', '.join(tables)} IN SHARE ROW EXCLUSIVE MODE")
        if runs is None:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
            cursor.execute(
                f"INSERT INTO reporting_countedmessage ({counter_sql.COLS}, {counter_sql.PREV_COLS}) "
                f"SELECT *, {counter_sql.PREV_EMPTY} FROM ({counter_sql.STATE_SQL}) AS s",
                params,
            )
            _aggregate_run_counters("", params)
            # Exact at this instant: writers of contacts wait for the count (a moment per million).
            cursor.execute("LOCK TABLE audience_contact IN SHARE MODE")
            cursor.execute("DELETE FROM reporting_contacttotal")
            cursor.execute(
                """INSERT INTO reporting_contacttotal (contacts, opted_out)
                   SELECT count(*), count(*) FILTER (WHERE consent_status = %(opted_out)s) FROM audience_contact""",
                params,
            )
        else:
            for table in ["reporting_countedmessage", *RUN_TABLES]:
                cursor.execute(f"DELETE FROM {table} WHERE run_id = ANY(%(runs)s)", params)
            cursor.execute(
                f"""INSERT INTO reporting_countedmessage ({counter_sql.COLS}, {counter_sql.PREV_COLS})
                    SELECT *, {counter_sql.PREV_EMPTY}
                    FROM ({counter_sql.STATE_SQL} WHERE r.run_id = ANY(%(runs)s)) AS s
                    ON CONFLICT (message_id) DO NOTHING""",
                params,
            )
            _aggregate_run_counters("AND run_id = ANY(%(runs)s)", params)
            cursor.execute("DELETE FROM reporting_minutecounter")
        cursor.execute(
            "INSERT INTO reporting_minutecounter (minute, outbound, inbound, accepted, failed)"
            + counter_sql.MINUTES_FROM_COUNTED_SQL,
            params,
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
        statement = counter_sql.RECOUNT_SQL.format(where="WHERE r.run_id = ANY(%(runs)s)")
        cursor.execute(statement, {"runs": list(run_ids)})
        return {(r[0], r[2], r[3], r[4]): (r[5], r[6], r[7]) for r in cursor.fetchall()}
