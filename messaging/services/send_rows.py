"""The rows a batch of sends reads and writes: its claims before the calls, its answers after, in bulk.

Part of the batch pipeline (``send_batch``): one conditional UPDATE claims a slice; the
answers are written by one UPDATE ... FROM (VALUES ...) per flush, each meaning taken from
``send_outcomes``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.types.json import Jsonb

from audience.models import ConsentStatus
from config import sql
from messaging.models import Direction, Message, MessageStatus, MessageTemplate, ProviderCallback, Sender
from messaging.providers import (
    ProviderError,
    SendResult,
)
from messaging.services import send
from messaging.services.send_outcomes import answer_verdict, error_effects, error_verdict
from messaging.services.status import STAMP_COLUMNS, status_callbacks_apply_pending

logger = logging.getLogger(__name__)

RECHECK_EVERY = 0.1  # seconds between consent re-reads of a batch's unsent contacts


@dataclass
class Outcome:
    message: Message
    started: float = 0.0  # epoch seconds the request left
    answered: float = 0.0
    result: SendResult | None = None
    error: ProviderError | None = None
    skip: str = ""  # not sent: the reason (the contact opted out mid-batch)


_CLAIM_COLUMNS = [
    ("id", "bigint"),
    ("body", "text"),
    ("content_sid", "varchar"),
    ("content_variables", "jsonb"),
    ("segments", "smallint"),
    ("encoding", "varchar"),
    ("to_address", "varchar"),
    ("from_address", "varchar"),
]


def claim(messages: list[Message], now: datetime) -> dict[int, int]:
    """Claim the messages still pending and due, and save what will be sent, in one conditional UPDATE.

    What will be sent is saved with the claim, before any provider call: reconciliation
    matches on it. Returns {message id: attempts} for the messages this call claimed.
    """
    rows = [
        (
            m.pk,
            m.body,
            m.content_sid,
            Jsonb(m.content_variables or {}),
            m.segments,
            m.encoding,
            m.to_address,
            m.from_address,
        )
        for m in messages
    ]
    sets = ", ".join(f"{name} = v.{name}" for name, _ in _CLAIM_COLUMNS[1:])
    claimed = sql.values_update(
        "messaging_message AS m",
        _CLAIM_COLUMNS,
        rows,
        f"status = %s, claimed_at = %s, sending_at = %s, attempts = m.attempts + 1, next_attempt_at = NULL, "
        f"updated_at = %s, {sets}",
        "WHERE m.id = v.id AND m.status = %s AND m.direction = %s "
        "AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= %s) RETURNING m.id, m.attempts",
        set_params=[MessageStatus.SENDING.value, now, now, now],
        tail_params=[MessageStatus.PENDING.value, Direction.OUTBOUND.value, now + timedelta(seconds=1)],
    )
    return dict(claimed)


def claimed_in_memory(message: Message, now: datetime, attempts: int) -> None:
    message.status = MessageStatus.SENDING
    message.claimed_at = message.sending_at = message.updated_at = now
    message.attempts = attempts
    message.next_attempt_at = None


# --- Sending -------------------------------------------------------------------------------


_COLUMNS = [
    ("id", "bigint"),
    ("status", "varchar"),
    ("sid", "varchar"),
    ("error_code", "varchar"),
    ("error_message", "varchar"),
    ("next_at", "timestamptz"),
    ("segments", "smallint"),
    ("price", "numeric"),
    ("price_unit", "varchar"),
    ("skip_reason", "varchar"),
    ("started", "timestamptz"),
    ("at", "timestamptz"),
]


def _row(message: Message, status: str, at: datetime, **fields: Any) -> tuple:
    values = {"status": str(status), "at": at, **fields}
    for name, value in values.items():
        if name not in ("sid", "next_at", "started", "at") and value is not None:
            setattr(message, name, value)
    message.status = str(status)
    if values.get("sid"):
        message.provider_sid = values["sid"]
    message.next_attempt_at = values.get("next_at")
    return tuple(values.get(name, "" if kind == "varchar" else None) for name, kind in _COLUMNS[1:])


def row_skipped(message: Message, reason: str) -> tuple:
    return (message.pk, *_row(message, MessageStatus.SKIPPED, timezone.now(), skip_reason=reason[:255]))


def _epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def row_for(outcome: Outcome) -> tuple | None:
    """The row that records a provider call's outcome; None when it is written elsewhere (unknown outcome)."""
    message, exc = outcome.message, outcome.error
    started, at = _epoch(outcome.started), _epoch(outcome.answered)
    if outcome.result is not None:
        result = outcome.result
        verdict = answer_verdict(result)
        fields = {
            "sid": result.provider_sid,
            "segments": result.segments,
            "price": result.price,
            "price_unit": result.price_unit if result.price is not None else "",
            "error_message": verdict.fields["error_message"],
            "started": started,
        }
        return (message.pk, *_row(message, verdict.status, at, **fields))
    assert exc is not None
    verdict = error_verdict(message, exc)
    error_effects(message, exc, verdict)
    if verdict.unknown:  # stays `sending`; the reconciler asks the provider
        return None
    if verdict.retry_in is not None:
        if message.source_type_id is None:  # campaign messages are re-sent, paced, by their dispatcher
            send.message_enqueue(message.pk, message.sender_id, countdown=verdict.retry_in)
        fields = {**verdict.fields, "next_at": at + timedelta(seconds=verdict.retry_in)}
        return (message.pk, *_row(message, verdict.status, at, started=started, **fields))
    return (message.pk, *_row(message, verdict.status, at, **verdict.fields, started=started))


@cache
def _stamps_sql() -> str:
    """One SET item per timestamp column: the row's time when its status names or implies it (earliest kept)."""
    by_column: dict[str, list[str]] = {}
    for status, columns in {**STAMP_COLUMNS, MessageStatus.SKIPPED: ("skipped_at",)}.items():
        for column in columns:
            by_column.setdefault(column, []).append(sql.literal(status))
    return ", ".join(
        f"{column} = CASE WHEN v.status IN ({', '.join(statuses)}) THEN LEAST(m.{column}, v.at) ELSE m.{column} END"
        for column, statuses in by_column.items()
        if column != "sending_at"
    )


def rows_write(rows: list[tuple]) -> set[int]:
    """Write the outcomes of messages still in `sending` in one statement; returns the ids that moved."""
    if not rows:
        return set()
    sets = f"""
        status = v.status, provider_sid = COALESCE(NULLIF(v.sid, ''), m.provider_sid),
            error_code = v.error_code, error_message = v.error_message, next_attempt_at = v.next_at,
            segments = COALESCE(v.segments, m.segments), price = COALESCE(v.price, m.price),
            price_unit = CASE WHEN v.price IS NULL THEN m.price_unit ELSE v.price_unit END,
            skip_reason = CASE WHEN v.skip_reason <> '' THEN v.skip_reason ELSE m.skip_reason END,
            sending_at = COALESCE(v.started, m.sending_at), updated_at = v.at, {_stamps_sql()}
    """
    tail = "WHERE m.id = v.id AND m.status = %s RETURNING m.id"
    update = partial(sql.values_update, "messaging_message AS m", _COLUMNS, sets=sets, tail=tail)
    still_sending = (MessageStatus.SENDING.value,)
    try:
        with transaction.atomic():
            return {row[0] for row in update(rows, tail_params=still_sending)}
    except IntegrityError:  # a provider sid already on another row: write one by one, flag the clash
        moved: set[int] = set()
        for row in rows:
            try:
                with transaction.atomic():
                    moved |= {r[0] for r in update([row], tail_params=still_sending)}
            except IntegrityError:
                logger.error("provider sid %s already recorded; message %s needs review", row[2], row[0])
                dup = (row[0], MessageStatus.FAILED.value, "", "duplicate", "provider sid reused", *row[5:])
                update([dup], tail_params=still_sending)  # re-read by the caller
        return moved


def unclaim(message_ids: list[int], claimed_at: datetime) -> None:
    """Claimed but never handed to the provider (stopped): pending again, the attempt not counted.

    Only this batch's claims (``claimed_at``): a batch held up past the reaper's patience may find
    its messages reconciled and claimed again by another batch, whose send may be in flight.
    """
    if message_ids:
        Message.objects.filter(
            pk__in=message_ids, status=MessageStatus.SENDING, provider_sid__isnull=True, claimed_at=claimed_at
        ).update(status=MessageStatus.PENDING, attempts=F("attempts") - 1, claimed_at=None, updated_at=timezone.now())


# --- Reads and callbacks around the calls --------------------------------------------------


def with_senders_and_templates(messages) -> list[Message]:
    """The messages with their sender and template, each read once for the batch (a campaign's
    batch shares one of each) instead of joined and built again for every row."""
    messages = list(messages)
    senders = Sender.objects.in_bulk({m.sender_id for m in messages if m.sender_id})
    templates = MessageTemplate.objects.in_bulk({m.template_id for m in messages if m.template_id})
    sender_field, template_field = Message._meta.get_field("sender"), Message._meta.get_field("template")
    for message in messages:
        sender_field.set_cached_value(message, senders.get(message.sender_id))
        template_field.set_cached_value(message, templates.get(message.template_id))
    return messages


class ConsentWatch:
    """The batch's unsent contacts that opted out since the claim, re-read at most RECHECK_EVERY apart."""

    def __init__(self, contact_ids: list[int]):
        self.unsent = set(contact_ids)
        self.out: set[int] = set()
        self.checked = time.monotonic()  # the claim just read them

    def sent(self, contact_id: int | None) -> None:
        self.unsent.discard(contact_id)

    def opted_out(self, contact_id: int | None) -> bool:
        if self.unsent and time.monotonic() - self.checked >= RECHECK_EVERY:
            rows = sql.fetch(
                "SELECT id FROM audience_contact WHERE id = ANY(%s::bigint[]) AND consent_status <> %s",
                [list(self.unsent), ConsentStatus.OPTED_IN.value],
            )
            self.out |= {row[0] for row in rows}
            self.checked = time.monotonic()
        return contact_id in self.out


def early_callbacks_apply(messages: list[Message]) -> None:
    """Status callbacks that arrived before their sid was saved: one query finds them, then apply."""
    sids = [m.provider_sid for m in messages if m.provider_sid]
    if not sids:
        return
    early = set(
        ProviderCallback.objects.filter(provider_sid__in=sids, applied_at__isnull=True).values_list(
            "provider_sid", flat=True
        )
    )
    for message in messages:
        if message.provider_sid in early:
            status_callbacks_apply_pending(message)
