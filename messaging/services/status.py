"""Provider status callbacks: store every event once, move the message forward only.

Callbacks are unordered and may repeat, so the message's status is the maximum
of the events seen under one total order (``TRANSITION_RANK``): whatever order
the same set of events arrives in, the message ends in the same state. A failure
outranks every progress status and the failures are ordered among themselves,
so a failure is never left and two failures always resolve the same way.

Timestamps follow the statuses' meaning, not the callbacks' arrival order. An event is evidence
that its status, and every status it implies (``STAMP_COLUMNS``: delivered implies sent, read
implies delivered and sent), was reached by its time: the carrier's own time when the callback
carries one we can trust (``provider_done_at``), else its arrival. Each timestamp keeps the
earliest evidence seen (``LEAST``), so in any order ``queued_at <= sent_at <= delivered_at <=
read_at`` holds, and a replay or a late callback never moves a time later.

The webhook path is one SQL statement (insert the event, lock and update the
message); an event whose sid is not saved yet waits with ``applied_at`` empty
until ``status_callbacks_apply_pending`` runs for that message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from config import sql
from messaging.models import FAILURE_STATUSES, Message, MessageStatus, ProviderCallback
from messaging.providers import UnknownStatus, error_meaning, status_for
from messaging.signals import message_status_changed, message_statuses_changed

# The one total order statuses move along. Statuses absent here (skipped, received) are never
# moved by a callback: they are not messages in flight.
TRANSITION_RANK: dict[MessageStatus, int] = {
    MessageStatus.PENDING: 0,
    MessageStatus.QUEUED: 1,
    MessageStatus.SENDING: 2,
    MessageStatus.SENT: 3,
    MessageStatus.DELIVERED: 4,
    MessageStatus.READ: 5,
    MessageStatus.CANCELED: 6,
    MessageStatus.UNDELIVERED: 7,
    MessageStatus.FAILED: 8,
}

TIMESTAMP_FIELDS: dict[MessageStatus, str] = {
    MessageStatus.QUEUED: "queued_at",
    MessageStatus.SENDING: "sending_at",
    MessageStatus.SENT: "sent_at",
    MessageStatus.DELIVERED: "delivered_at",
    MessageStatus.READ: "read_at",
    MessageStatus.CANCELED: "canceled_at",
    MessageStatus.UNDELIVERED: "failed_at",
    MessageStatus.FAILED: "failed_at",
    MessageStatus.RECEIVED: "received_at",
}

# The timestamp columns an event of each status is evidence for: its own and those of the statuses
# it implies. A message delivered or read was sent; one undelivered reached the carrier (sent) and
# failed there; failed (never sent) and canceled imply nothing. ``sending_at`` is ours (when the
# request left), filled by a callback only when empty.
STAMP_COLUMNS: dict[MessageStatus, tuple[str, ...]] = {
    MessageStatus.QUEUED: ("queued_at",),
    MessageStatus.SENDING: ("sending_at",),
    MessageStatus.SENT: ("queued_at", "sent_at"),
    MessageStatus.DELIVERED: ("queued_at", "sent_at", "delivered_at"),
    MessageStatus.READ: ("queued_at", "sent_at", "delivered_at", "read_at"),
    MessageStatus.CANCELED: ("canceled_at",),
    MessageStatus.UNDELIVERED: ("queued_at", "sent_at", "failed_at"),
    MessageStatus.FAILED: ("failed_at",),
    MessageStatus.RECEIVED: ("received_at",),
}
# Statuses whose Twilio callback may carry the carrier's delivery receipt time (SMS and MMS).
PROVIDER_TIMED = frozenset({MessageStatus.DELIVERED, MessageStatus.UNDELIVERED})
RAW_DLR_DONE_DATE = re.compile(r"\d{10}")


def provider_status_or_none(provider_status: str) -> MessageStatus | None:
    try:
        return status_for(provider_status)
    except UnknownStatus:
        return None


@dataclass(frozen=True)
class StatusChange:
    message_id: int
    old: str
    new: str
    # What caused the message (see Message.source): lets receivers skip messages they do not track
    # without a query on the webhook's hot path.
    source_type_id: int | None = None


def error_message_for(error_code: str, given: str = "") -> str:
    if not error_code:
        return ""
    return (given or error_meaning(error_code))[:500]


def provider_done_at(status: MessageStatus, payload: dict[str, Any]) -> datetime | None:
    """The carrier's delivery receipt time of a delivered/undelivered callback, read as UTC; None if absent.

    Twilio passes it through as ``RawDlrDoneDate``, YYMMDDhhmm: minute precision and no time zone
    (carriers differ). ``_evidence_sql`` uses it only where it agrees with what we know.
    """
    if status not in PROVIDER_TIMED:
        return None
    raw = payload.get("RawDlrDoneDate")
    if not isinstance(raw, str) or not RAW_DLR_DONE_DATE.fullmatch(raw):
        return None
    try:
        return datetime.strptime(raw, "%y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:  # 10 digits that are no date (month 13)
        return None


def _evidence_sql(row: str) -> str:
    """When the event's status was reached, for the message row ``row``.

    The provider's time (``%(provider_at)s``) when, read as UTC, it is consistent with what we
    know: not before the request left (``sending_at``, else ``created_at``) less its minute
    precision, not after the callback arrived (``%(at)s``); then clamped into that span. A
    carrier reporting local time is off by hours and fails the test. Otherwise the arrival.
    """
    floor = f"COALESCE({row}.sending_at, {row}.created_at)"
    provider, arrival = "%(provider_at)s::timestamptz", "%(at)s::timestamptz"
    return (
        f"CASE WHEN {provider} BETWEEN {floor} - interval '1 minute' AND {arrival} "
        f"THEN LEAST(GREATEST({provider}, {floor}), {arrival}) ELSE {arrival} END"
    )


@cache
def _set_clause(status: MessageStatus, at: str) -> str:
    """SET clause moving row ``m`` to ``status`` if that is forward; its timestamps take the evidence ``at``.

    Column names and status literals come from the tables above, never from input.
    """
    movable = [str(s) for s, rank in TRANSITION_RANK.items() if rank < TRANSITION_RANK.get(status, -1)]
    moves = "m.status IN ({})".format(", ".join(sql.literal(s) for s in movable)) if movable else "FALSE"
    sets = [f"status = CASE WHEN {moves} THEN {sql.literal(status)} ELSE m.status END"]
    for column in STAMP_COLUMNS[status]:
        earliest = "COALESCE" if column == "sending_at" else "LEAST"  # LEAST skips NULLs: fills an empty one
        sets.append(f"{column} = {earliest}(m.{column}, {at})")
    sets.append("updated_at = now()")
    if status in FAILURE_STATUSES:
        sets.append(f"error_code = CASE WHEN {moves} THEN %(error_code)s ELSE m.error_code END")
        sets.append(f"error_message = CASE WHEN {moves} THEN %(error_message)s ELSE m.error_message END")
    return ", ".join(sets)


@cache
def _record_sql(status: MessageStatus) -> str:
    # One round trip and one commit: insert the event (a replay inserts nothing), and only if it
    # is new, lock and move the message. The message row is locked before the event is inserted,
    # so concurrent callbacks for one sid serialise and RETURNING reports the true old status and
    # whether a time moved without the status (earlier evidence arriving after a later status).
    stamps = ", ".join(STAMP_COLUMNS[status])
    return f"""
WITH msg AS (
    SELECT id, status, {stamps}, {_evidence_sql("messaging_message")} AS at
    FROM messaging_message WHERE provider_sid = %(sid)s FOR UPDATE
), ev AS (
    INSERT INTO messaging_providercallback
        (kind, provider_sid, status, message_id, error_code, payload, received_at, applied_at)
    SELECT %(kind)s, %(sid)s, %(raw)s, msg.id, %(error_code)s, %(payload)s::jsonb, %(at)s,
           CASE WHEN msg.id IS NULL THEN NULL ELSE %(at)s::timestamptz END
    FROM (VALUES (1)) AS one (x) LEFT JOIN msg ON TRUE
    ON CONFLICT (provider_sid, status) DO NOTHING
    RETURNING message_id
), upd AS (
    UPDATE messaging_message AS m SET {_set_clause(status, "msg.at")}
    FROM ev JOIN msg ON msg.id = ev.message_id
    WHERE m.id = msg.id
    RETURNING m.id, msg.status AS old_status, m.status AS new_status, m.source_type_id,
              ROW({", ".join(f"msg.{c}" for c in STAMP_COLUMNS[status])})
              IS DISTINCT FROM ROW({", ".join(f"m.{c}" for c in STAMP_COLUMNS[status])}) AS restamped
)
SELECT (SELECT count(*) FROM ev), upd.id, upd.old_status, upd.new_status, upd.source_type_id, upd.restamped
FROM (VALUES (1)) AS one (x) LEFT JOIN upd ON TRUE
"""


def status_callback_record(*, provider_sid: str, status: str, error_code: str = "", payload: dict) -> bool:
    """Store one status callback and apply it if the message is known; False for a replay.

    ``status`` is the provider's name (``UnknownStatus`` if the provider's table lacks it).
    """
    ours = status_for(status)
    params = {
        "kind": ProviderCallback.Kind.STATUS.value,
        "sid": provider_sid,
        "raw": status.lower(),
        "error_code": error_code,
        "error_message": error_message_for(error_code, str(payload.get("ErrorMessage", ""))),
        "payload": json.dumps(payload),
        "at": timezone.now(),
        "provider_at": provider_done_at(ours, payload),
    }
    created, message_id, old, new, source_type_id, restamped = sql.fetch_one_prepared(_record_sql(ours), params)
    if message_id is not None and old != new:
        _notify(StatusChange(message_id, old, new, source_type_id))
    elif restamped and source_type_id is not None:
        _notify_restamped(message_id)
    return bool(created)


def status_callbacks_apply_pending(message: Message) -> int:
    """Apply the stored, not yet applied status callbacks of ``message``'s sid; returns how many.

    Safe to call at any time and more than once: the send service calls it right after saving
    the sid, the sweep task for events that raced with that save. ``message`` is refreshed.
    """
    if not message.provider_sid:
        return 0
    stamps = sorted({column for columns in STAMP_COLUMNS.values() for column in columns})
    with transaction.atomic():
        old, *old_stamps = Message.objects.select_for_update().values_list("status", *stamps).get(pk=message.pk)
        pending = list(
            ProviderCallback.objects.select_for_update()
            .filter(provider_sid=message.provider_sid, kind=ProviderCallback.Kind.STATUS, applied_at__isnull=True)
            .order_by("received_at", "id")
        )
        for event in pending:
            _apply_event(message.pk, event)
        if pending:
            ProviderCallback.objects.filter(pk__in=[e.pk for e in pending]).update(
                applied_at=timezone.now(), message_id=message.pk
            )
        message.refresh_from_db(fields=["status", "error_code", "error_message", *stamps])
        if message.status != old:
            _notify(StatusChange(message.pk, old, message.status, message.source_type_id))
        elif old_stamps != [getattr(message, column) for column in stamps] and message.source_type_id is not None:
            _notify_restamped(message.pk)
    return len(pending)


def _apply_event(message_id: int, event: ProviderCallback) -> None:
    ours = provider_status_or_none(event.status)
    if ours is None:  # stored by an older table; kept, but it cannot move anything
        return
    params = {
        "id": message_id,
        "at": event.received_at,
        "provider_at": provider_done_at(ours, event.payload),
        "error_code": event.error_code,
        "error_message": error_message_for(event.error_code, str(event.payload.get("ErrorMessage", ""))),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE messaging_message AS m SET {_set_clause(ours, "e.at")}
                FROM (SELECT x.id, {_evidence_sql("x")} AS at FROM messaging_message x WHERE x.id = %(id)s) AS e
                WHERE m.id = e.id""",
            params,
        )


def status_callbacks_sweep(*, older_than_seconds: int = 5, limit: int = 1000) -> int:
    """Apply pending events whose message has its sid by now; returns how many were applied.

    Events for sids we never sent (another system on the account) stay pending and are skipped
    by the join, so they cannot crowd out the ones that matter.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    pending_sids = ProviderCallback.objects.filter(
        kind=ProviderCallback.Kind.STATUS, applied_at__isnull=True, received_at__lt=cutoff
    ).values("provider_sid")
    applied = 0
    for message in Message.objects.filter(provider_sid__in=pending_sids).order_by("pk")[:limit]:
        applied += status_callbacks_apply_pending(message)
    return applied


def _notify(change: StatusChange) -> None:
    transaction.on_commit(
        lambda: message_status_changed.send(
            sender=Message,
            message_id=change.message_id,
            old=change.old,
            new=change.new,
            source_type_id=change.source_type_id,
        )
    )


def _notify_restamped(message_id: int) -> None:
    """A status's time moved but not the status: the apps above recount what they derive from it."""
    transaction.on_commit(lambda: message_statuses_changed.send(sender=Message, message_ids=[message_id]))
