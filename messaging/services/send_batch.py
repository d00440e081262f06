"""Sending many messages at once, with the same exactly-once rules as ``send.message_send``.

``messages_send_batch(ids)`` is the campaigns' path: a few statements per batch instead of a
dozen per message, and enough concurrent provider calls to hide the provider's latency.

1. One transaction loads the batch's pending messages with their contacts (the consent check for
   the whole batch), renders them in Python, and claims them with what will be sent in one
   conditional ``UPDATE ... FROM unnest(...) ... RETURNING`` (a message another batch claimed
   meanwhile is not returned, and not sent here). From its
   commit on, a message in ``sending`` without a sid is one the provider may hold: the
   reconciler asks the provider before anything is sent again, as for ``message_send``.
2. The calling thread then hands the messages one by one to a pool of sender threads (each with
   its own provider client and kept-alive connections), taking a pacing token right before each
   hand-over, so the token is spent when the HTTP request leaves. Before each hand-over it asks
   ``keep_going`` (pause, cancel) and, at most ``RECHECK_EVERY`` apart, re-reads the consent of
   the contacts not sent yet in one query: a STOP that arrives mid-batch is honoured. A batch
   held up past ``CLAIM_SEND_WINDOW`` (a Redis outage stalls pacing) sends nothing more: by
   then the reaper may be reconciling its claims, and could send them again.
3. The outcomes are written with one ``UPDATE ... FROM unnest(...)`` (sid, status, error,
   retry time); messages the batch claimed but never handed over go back to ``pending``.
   ``message_statuses_changed`` tells the apps above which messages moved.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from audience.models import ConsentStatus
from config import observe, sql
from messaging.models import Direction, Message, MessageEvent, MessageStatus, MessageTemplate, Sender
from messaging.providers import ErrorKind, ProviderError, SendResult, get_provider, provider_name_for
from messaging.services import send
from messaging.services.status import STAMP_COLUMNS, status_events_apply_pending, status_map
from messaging.signals import message_statuses_changed

logger = logging.getLogger(__name__)

SEND_THREADS = 32  # per process: ~1,000 sends/s through a 30 ms provider need ~30 in flight
RECHECK_EVERY = 0.1  # seconds between consent re-reads of a batch's unsent contacts
# Seconds after its claim a batch may still hand a message to the provider; the rest go back to
# pending. Half the age at which the messaging reaper reconciles (and may resend) a claim.
CLAIM_SEND_WINDOW = send.STALE_SENDING_AFTER.total_seconds() / 2

_executor_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="send")
        return _executor


@dataclass
class BatchResult:
    messages: dict[int, Message] = field(default_factory=dict)  # every id asked for, in its state after the batch
    unsent: list[int] = field(default_factory=list)  # claimed here, never handed over: pending again


@dataclass
class _Outcome:
    message: Message
    started: float = 0.0  # epoch seconds the request left
    answered: float = 0.0
    result: SendResult | None = None
    error: ProviderError | None = None


def messages_send_batch(
    message_ids: Sequence[int],
    *,
    pace: Callable[[], Any] = lambda: True,
    keep_going: Callable[[], bool] = lambda: True,
    concurrency: int = SEND_THREADS,
) -> BatchResult:
    """Send the pending messages among ``message_ids`` once each; the others are returned as they are.

    ``pace`` blocks until the caller may send one more message (False: stop); when it returns a
    callable, the sender thread calls it right before the request leaves. ``keep_going`` is
    asked before each send (False: stop). Stopped messages are put back to ``pending``.
    """
    now = timezone.now()
    # Past half the reaper's patience the claims are no longer trusted to be this batch's: the
    # messaging reaper may be asking the provider about them (and send them again if not found).
    claim_trusted_until = time.monotonic() + CLAIM_SEND_WINDOW
    with transaction.atomic():
        candidates = _with_senders_and_templates(
            Message.objects.select_related("contact").filter(send.claimable(now), pk__in=list(message_ids))
        )
        verdicts = [(message, send._refusal(message, now) or send.render_fill(message)) for message in candidates]
        claimed = _claim([message for message, _ in verdicts], now)
        ready, refused, loaded = [], [], []
        for message, reason in verdicts:
            if message.pk in claimed:  # another batch may have claimed it since it was read
                _claimed_in_memory(message, now, claimed[message.pk])
                loaded.append(message)
                (refused if reason else ready).append((message, reason))
    ready_messages = sorted((message for message, _ in ready), key=lambda message: message.pk)
    outcomes, skipped, unsent = _send_all(
        ready_messages, pace, lambda: time.monotonic() < claim_trusted_until and keep_going(), concurrency
    )
    rows = [_row_skipped(message, reason) for message, reason in refused]
    rows += [_row_skipped(message, send.SKIP_OPTED_OUT) for message in skipped]
    rows += [row for outcome in outcomes if (row := _row_for(outcome)) is not None]
    moved = _rows_write(rows)
    _unclaim([message.pk for message in unsent], now)
    result = BatchResult(unsent=[message.pk for message in unsent])
    for message in loaded:
        result.messages[message.pk] = message
    lagging = [pk for pk in message_ids if pk not in result.messages or (pk in claimed and pk not in moved)]
    lagging = [pk for pk in lagging if pk not in result.unsent]
    for message in Message.objects.filter(pk__in=lagging):
        result.messages[message.pk] = message
    _early_callbacks_apply([outcome.message for outcome in outcomes if outcome.result is not None])
    if moved:
        transaction.on_commit(lambda: message_statuses_changed.send(sender=Message, message_ids=sorted(moved)))
    return result


def _with_senders_and_templates(messages) -> list[Message]:
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


# --- Claim and intent ----------------------------------------------------------------------


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


def _claim(messages: list[Message], now: datetime) -> dict[int, int]:
    """Claim the messages still pending and due, and save what will be sent, in one conditional UPDATE.

    What will be sent is saved with the claim, before any provider call: reconciliation
    matches on it. Returns {message id: attempts} for the messages this call claimed.
    """
    from psycopg.types.json import Jsonb

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


def _claimed_in_memory(message: Message, now: datetime, attempts: int) -> None:
    message.status = MessageStatus.SENDING
    message.claimed_at = message.sending_at = message.updated_at = now
    message.attempts = attempts
    message.next_attempt_at = None


# --- Sending -------------------------------------------------------------------------------


def _send_all(
    messages: list[Message], pace: Callable[[], Any], keep_going: Callable[[], bool], concurrency: int
) -> tuple[list[_Outcome], list[Message], list[Message]]:
    """Hand the messages to the sender threads, paced; returns (outcomes, skipped opted-out, never sent)."""
    outcomes: list[_Outcome] = []
    skipped: list[Message] = []
    futures: list[Future] = []
    slots = threading.Semaphore(max(1, concurrency))
    consent = _ConsentWatch([m.contact_id for m in messages if m.contact_id])
    for index, message in enumerate(messages):
        slots.acquire()  # a free sender first, so the token is spent when the request leaves
        token = pace()
        if not token or not keep_going():
            slots.release()
            _wait(futures)
            return outcomes, skipped, messages[index:]
        if consent.opted_out(message.contact_id):
            slots.release()
            skipped.append(message)
            continue
        outcome = _Outcome(message)
        outcomes.append(outcome)
        consent.sent(message.contact_id)
        name = provider_name_for(message.sender.provider)
        request = send.send_request_for(message)
        started = token if callable(token) else None
        if name == "simulated":  # no network: inline, on this thread's database connection
            _call(outcome, name, request, started)
            slots.release()
            continue
        future = _pool().submit(_call, outcome, name, request, started)
        future.add_done_callback(lambda _: slots.release())
        futures.append(future)
    _wait(futures)
    return outcomes, skipped, []


def _wait(futures: list[Future]) -> None:
    for future in futures:
        future.result()


def _call(outcome: _Outcome, provider_name: str, request, started: Callable[[], None] | None) -> None:
    provider = get_provider(provider_name)
    if started is not None:
        started()
    outcome.started = time.time()
    try:
        outcome.result = provider.send(request)
    except ProviderError as exc:
        outcome.error = exc
    except Exception as exc:  # noqa: BLE001 - a bug in a client must not lose the batch: unknown outcome
        logger.exception("provider call for message %s raised", outcome.message.pk)
        outcome.error = ProviderError(ErrorKind.RETRYABLE, "", f"client error: {exc}", accepted_unknown=True)
    outcome.answered = time.time()


class _ConsentWatch:
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


# --- Outcomes ------------------------------------------------------------------------------

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


def _row_skipped(message: Message, reason: str) -> tuple:
    return (message.pk, *_row(message, MessageStatus.SKIPPED, timezone.now(), skip_reason=reason[:255]))


def _epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _row_for(outcome: _Outcome) -> tuple | None:
    """The row that records a provider call's outcome; None when it is written elsewhere (unknown outcome)."""
    message, exc = outcome.message, outcome.error
    started, at = _epoch(outcome.started), _epoch(outcome.answered)
    if outcome.result is not None:
        result = outcome.result
        try:
            status = status_map(result.status)
        except ValueError:
            status = MessageStatus.QUEUED
        failed = status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED)
        fields = {
            "sid": result.provider_sid,
            "segments": result.segments,
            "price": result.price,
            "price_unit": result.price_unit if result.price is not None else "",
            "error_message": f"the provider answered {result.status}" if failed else "",
            "started": started,
        }
        return (message.pk, *_row(message, status, at, **fields))
    assert exc is not None
    observe.provider_error_count(message.sender_id, exc.code)
    if exc.accepted_unknown:
        send._outcome_unknown(message, exc)  # stays `sending`; the reconciler asks the provider
        return None
    if exc.kind == ErrorKind.RETRYABLE and message.attempts < send.MAX_ATTEMPTS:
        delay = send.retry_delay(message.attempts)
        if message.source_type_id is None:  # campaign messages are re-sent, paced, by their dispatcher
            send.message_enqueue(message.pk, countdown=delay)
        fields = {
            "error_code": exc.code,
            "error_message": send.retry_text(message, exc),
            "next_at": at + timedelta(seconds=delay),
        }
        return (message.pk, *_row(message, MessageStatus.PENDING, at, started=started, **fields))
    text = send.give_up_text(message, exc) if exc.kind == ErrorKind.RETRYABLE else exc.message[:500]
    if exc.kind == ErrorKind.OPTED_OUT:
        send.provider_opt_out(message, exc)
    fields = {"error_code": exc.code, "error_message": text, "started": started}
    return (message.pk, *_row(message, MessageStatus.FAILED, at, **fields))


@cache
def _stamps_sql() -> str:
    """One SET item per timestamp column: the row's time when its status names or implies it (earliest kept)."""
    by_column: dict[str, list[str]] = {}
    for status, columns in {**STAMP_COLUMNS, MessageStatus.SKIPPED: ("skipped_at",)}.items():
        for column in columns:
            by_column.setdefault(column, []).append(f"'{status}'")
    return ", ".join(
        f"{column} = CASE WHEN v.status IN ({', '.join(statuses)}) THEN LEAST(m.{column}, v.at) ELSE m.{column} END"
        for column, statuses in by_column.items()
        if column != "sending_at"
    )


def _rows_write(rows: list[tuple]) -> set[int]:
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
    tail = "WHERE m.id = v.id AND m.status = 'sending' RETURNING m.id"
    try:
        with transaction.atomic():
            return {row[0] for row in sql.values_update("messaging_message AS m", _COLUMNS, rows, sets, tail)}
    except IntegrityError:  # a provider sid already on another row: write one by one, flag the clash
        moved: set[int] = set()
        for row in rows:
            try:
                with transaction.atomic():
                    moved |= {r[0] for r in sql.values_update("messaging_message AS m", _COLUMNS, [row], sets, tail)}
            except IntegrityError:
                logger.error("provider sid %s already recorded; message %s needs review", row[2], row[0])
                dup = (row[0], MessageStatus.FAILED.value, "", "duplicate", "provider sid reused", *row[5:])
                sql.values_update("messaging_message AS m", _COLUMNS, [dup], sets, tail)  # re-read by the caller
        return moved


def _unclaim(message_ids: list[int], claimed_at: datetime) -> None:
    """Claimed but never handed to the provider (stopped): pending again, the attempt not counted.

    Only this batch's claims (``claimed_at``): a batch held up past the reaper's patience may find
    its messages reconciled and claimed again by another batch, whose send may be in flight.
    """
    if message_ids:
        Message.objects.filter(
            pk__in=message_ids, status=MessageStatus.SENDING, provider_sid__isnull=True, claimed_at=claimed_at
        ).update(status=MessageStatus.PENDING, attempts=F("attempts") - 1, claimed_at=None, updated_at=timezone.now())


def _early_callbacks_apply(messages: list[Message]) -> None:
    """Status callbacks that arrived before their sid was saved: one query finds them, then apply."""
    sids = [m.provider_sid for m in messages if m.provider_sid]
    if not sids:
        return
    early = set(
        MessageEvent.objects.filter(provider_sid__in=sids, applied_at__isnull=True).values_list(
            "provider_sid", flat=True
        )
    )
    for message in messages:
        if message.provider_sid in early:
            status_events_apply_pending(message)
