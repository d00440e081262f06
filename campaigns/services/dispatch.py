"""Delivering a run: claim recipients in batches, pace per sender, send, record, keep counts exact.

A recipient moves pending -> sending when a dispatcher claims it (``SELECT ... FOR UPDATE SKIP
LOCKED`` then an UPDATE, one transaction that also links its Message and moves the run's
counters). Each send goes through ``messaging.services.send.message_send``, whose own claim on
the Message is what makes a send happen at most once: a recipient claimed twice (a reaped claim,
a redelivered task) still reaches the provider once. The outcome moves the recipient to sent,
skipped or failed (or back to pending for a retry) with a conditional UPDATE in the same
transaction as the counter change, so ``pending + held + sending + sent + skipped + failed``
always equals ``total`` and every counter equals a recount.

The run's status is read before each batch and before each send: after a pause or cancel is
stored, nothing new goes to the provider (a send already at the provider finishes). Claimed but
unsent recipients go back to pending (or skipped 'cancelled').

A worker that dies leaves recipients in ``sending``. ``recipients_reap`` settles them from their
Message, never by resending: a Message with a provider sid is sent; one still pending was never
sent (safe to queue again); one in ``sending`` without a sid is left to the messaging reaper,
which asks the provider first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Min, Q
from django.utils import timezone

from audience.models import Contact
from campaigns import pacing
from campaigns.models import CampaignRun, Recipient, RecipientState, RunStatus, SkipReason
from messaging.models import Message, MessageStatus
from messaging.services import send as send_service

logger = logging.getLogger(__name__)

R = RecipientState
BATCH_SECONDS = 2  # a batch holds about this many seconds of sends at the run's MPS
BATCH_MAX = 50  # one dispatcher sends ~25/s through a 30 ms provider: ~2 s of work
# A claim older than this whose Message was never sent lost its worker: queue it again.
# The Message's own claim still guards against a double send if the worker was only slow.
STALE_CLAIM_AFTER = timedelta(seconds=120)
QUIET_RUN_AFTER = timedelta(seconds=60)
SETTLE_EVERY = 0.5  # seconds between outcome writes within a batch
RETRY_POLL_MAX = 5.0  # seconds; short countdowns only (the Redis broker redelivers long ones)

# The send service's skip texts and provider error codes, as recipient skip reasons.
SKIP_REASONS = {
    send_service.SKIP_OPTED_OUT: SkipReason.OPTED_OUT,
    send_service.SKIP_OUTSIDE_WINDOW: SkipReason.OUTSIDE_WINDOW,
}
SKIP_CODES = {"21610": SkipReason.OPTED_OUT, "63016": SkipReason.OUTSIDE_WINDOW}
MESSAGE_FAILURES = {MessageStatus.FAILED, MessageStatus.UNDELIVERED, MessageStatus.CANCELED}


# --- Counters ------------------------------------------------------------------------------


def _counters_move(run_id: int, deltas: dict[str, int], reasons: dict[str, int] | None = None) -> None:
    """Add ``deltas`` to the run's counters (and skipped_by_reason) in one UPDATE; no read-modify-write."""
    sets, params = [], []
    for name, delta in deltas.items():
        if delta:
            assert name in ("pending", "held", "sending", "sent", "skipped", "failed")
            sets.append(f"{name} = {name} + %s")
            params.append(delta)
    if reasons := {k: v for k, v in (reasons or {}).items() if v}:
        parts = []
        for reason, count in reasons.items():
            parts.append("%s::text, COALESCE((skipped_by_reason ->> %s)::int, 0) + %s")
            params += [reason, reason, count]
        sets.append(
            f"skipped_by_reason = COALESCE(skipped_by_reason, '{{}}'::jsonb) || jsonb_build_object({', '.join(parts)})"
        )
    if not sets:
        return
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE campaigns_campaignrun SET {', '.join(sets)} WHERE id = %s", [*params, run_id])


def _run_status_locked(run_id: int) -> str:
    return CampaignRun.objects.select_for_update().values_list("status", flat=True).get(pk=run_id)


# --- Claiming ------------------------------------------------------------------------------


def batch_size(mps: int) -> int:
    return max(1, min(BATCH_MAX, (mps or BATCH_MAX) * BATCH_SECONDS))


def recipients_claim(run: CampaignRun, limit: int, now: datetime | None = None) -> list[tuple[int, int]]:
    """Claim up to ``limit`` due pending recipients; returns [(recipient_id, message_id)].

    Recipients waiting for a retry (their Message has a future next_attempt_at) are not due.
    A recipient without a Message gets one here, right after the claim commits.
    """
    now = now or timezone.now()
    due = Q(message__isnull=True) | Q(message__next_attempt_at__isnull=True) | Q(message__next_attempt_at__lte=now)
    with transaction.atomic():
        if _run_status_locked(run.pk) != RunStatus.RUNNING:
            return []
        rows = list(
            Recipient.objects.filter(due, run_id=run.pk, state=R.PENDING)
            .order_by("pk")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", "contact_id", "message_id")[:limit]
        )
        if not rows:
            return []
        ids = [pk for pk, _, _ in rows]
        Recipient.objects.filter(pk__in=ids).update(state=R.SENDING, claimed_at=now)
        _counters_move(run.pk, {"pending": -len(ids), "sending": len(ids)})
        CampaignRun.objects.filter(pk=run.pk).update(dispatched_at=now)
    # Outside the claim: the run row stays locked only for the counter move. A crash here leaves
    # claims without a Message, which the reaper puts back to pending.
    with transaction.atomic():
        return _messages_link(run, rows)


def _messages_link(run: CampaignRun, rows: list[tuple[int, int, int | None]]) -> list[tuple[int, int]]:
    campaign = run.campaign
    missing = [(pk, contact_id) for pk, contact_id, message_id in rows if message_id is None]
    contacts = Contact.objects.in_bulk([contact_id for _, contact_id in missing])
    created: dict[int, int] = {}
    for pk, contact_id in missing:
        message, _ = send_service.message_create(
            contact=contacts[contact_id],
            template=campaign.template,
            sender=campaign.sender,
            source=Recipient(pk=pk),
            enqueue=False,
        )
        created[pk] = message.pk
    if created:
        Recipient.objects.bulk_update(
            [Recipient(pk=pk, message_id=message_id) for pk, message_id in created.items()], ["message"]
        )
    return [(pk, message_id or created[pk]) for pk, _, message_id in rows]


# --- Outcomes ------------------------------------------------------------------------------


def recipient_outcome(message: Message) -> tuple[str, str, str] | None:
    """(state, reason, detail) a recipient takes from its Message; None while the outcome is unknown."""
    if message.provider_sid:
        return R.SENT, "", ""
    if message.status == MessageStatus.SKIPPED:
        return R.SKIPPED, SKIP_REASONS.get(message.skip_reason, _missing_or_other(message.skip_reason)), ""
    if message.status in MESSAGE_FAILURES:
        if message.error_code in SKIP_CODES:
            return R.SKIPPED, SKIP_CODES[message.error_code], message.error_message[:255]
        return R.FAILED, (message.error_code or "failed")[:32], message.error_message[:255]
    if message.status == MessageStatus.PENDING:
        return R.PENDING, "", ""
    return None  # sending without a sid: the provider is asked first (messaging reconcile)


def _missing_or_other(skip_reason: str) -> str:
    return SkipReason.MISSING_VARIABLE if skip_reason.startswith("missing variable") else skip_reason[:32]


def recipient_settle(
    run_id: int, recipient_id: int, outcome: tuple[str, str, str], now: datetime | None = None
) -> bool:
    """Move one claimed recipient to its outcome with the counters, if it is still claimed."""
    return recipients_settle(run_id, [(recipient_id, outcome)], now) == 1


def recipients_settle(
    run_id: int, outcomes: list[tuple[int, tuple[str, str, str]]], now: datetime | None = None
) -> int:
    """Move claimed recipients to their outcomes and the run's counters with them, in one transaction.

    One conditional UPDATE (only rows still in ``sending`` move) and one counter UPDATE, so a
    batch's outcomes cost two statements and one commit, and the run row is locked once.
    Returns how many recipients moved.
    """
    if not outcomes:
        return 0
    now = now or timezone.now()
    with transaction.atomic():
        cancelled = _run_status_locked(run_id) == RunStatus.CANCELLED
        rows = []
        for recipient_id, (state, reason, detail) in outcomes:
            if state == R.PENDING and cancelled:
                state, reason, detail = R.SKIPPED, SkipReason.CANCELLED, ""
            rows.append((recipient_id, str(state), str(reason), detail))
        values = ", ".join(["(%s::bigint, %s, %s, %s)"] * len(rows))
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE campaigns_recipient AS r
                SET state = v.state, reason = v.reason, detail = v.detail, claimed_at = NULL,
                    sent_at = CASE WHEN v.state = %s THEN %s::timestamptz ELSE r.sent_at END
                FROM (VALUES {values}) AS v (id, state, reason, detail)
                WHERE r.id = v.id AND r.state = %s
                RETURNING v.state, v.reason
                """,
                [str(R.SENT), now, *[value for row in rows for value in row], str(R.SENDING)],
            )
            moved = cursor.fetchall()
        deltas: dict[str, int] = {"sending": -len(moved)}
        reasons: dict[str, int] = {}
        for state, reason in moved:
            deltas[state] = deltas.get(state, 0) + 1
            if state == R.SKIPPED:
                reasons[reason] = reasons.get(reason, 0) + 1
        _counters_move(run_id, deltas, reasons)
    return len(moved)


def recipients_release(run_id: int, recipient_ids: Iterable[int]) -> int:
    """Give back claimed recipients that were not sent: pending again, or skipped if the run was cancelled."""
    ids = list(recipient_ids)
    if not ids:
        return 0
    with transaction.atomic():
        cancelled = _run_status_locked(run_id) == RunStatus.CANCELLED
        claimed = Recipient.objects.filter(pk__in=ids, state=R.SENDING)
        if cancelled:
            moved = claimed.update(state=R.SKIPPED, reason=SkipReason.CANCELLED, claimed_at=None)
            _counters_move(run_id, {"sending": -moved, "skipped": moved}, {SkipReason.CANCELLED: moved})
            _messages_drop(ids)
        else:
            moved = claimed.update(state=R.PENDING, claimed_at=None)
            _counters_move(run_id, {"sending": -moved, "pending": moved})
    return moved


def _messages_drop(recipient_ids: list[int]) -> None:
    """Unsent Messages of skipped recipients are skipped too, so nothing ever sends them."""
    Message.objects.filter(
        recipient__pk__in=recipient_ids, recipient__state=R.SKIPPED, status=MessageStatus.PENDING
    ).update(status=MessageStatus.SKIPPED, skip_reason="campaign cancelled", skipped_at=timezone.now())


# --- The dispatcher ------------------------------------------------------------------------


def _running(run_id: int) -> bool:
    return CampaignRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).exists()


def run_dispatch_batch(run_id: int) -> tuple[int, float | None]:
    """Claim and send one batch of a run; returns (recipients claimed, seconds until the next batch or None).

    None means nothing is left for this dispatcher (the run is done, paused, cancelled or
    only has claims other workers hold); a number asks to be run again after that delay.
    """
    run = CampaignRun.objects.select_related("campaign__sender", "campaign__template").filter(pk=run_id).first()
    if run is None or run.status != RunStatus.RUNNING:
        return 0, None
    run_expire(run)
    sender = run.campaign.sender
    mps = min(run.mps, sender.effective_mps) if run.mps else sender.effective_mps
    claimed = recipients_claim(run, batch_size(mps))
    if not claimed:
        return 0, _after_empty_claim(run)
    done: list[tuple[int, tuple[str, str, str]]] = []  # outcomes not recorded yet
    flushed = time.monotonic()
    for index, (recipient_id, message_id) in enumerate(claimed):
        slot = pacing.slot_take(sender.pk, mps, keep_going=lambda: _running(run_id))
        if slot is None or not _running(run_id):
            recipients_settle(run_id, done)
            recipients_release(run_id, [pk for pk, _ in claimed[index:]])
            return index, None
        message = send_service.message_send(message_id)
        outcome = recipient_outcome(message)
        if outcome is not None:
            done.append((recipient_id, outcome))
        if time.monotonic() - flushed > SETTLE_EVERY:  # counters stay fresh for the progress bar
            recipients_settle(run_id, done)
            done, flushed = [], time.monotonic()
    recipients_settle(run_id, done)
    return len(claimed), 0.0


def _after_empty_claim(run: CampaignRun) -> float | None:
    """Nothing was due: wait for retries, or close the run if everyone is final."""
    waiting = Recipient.objects.filter(run=run, state=R.PENDING).aggregate(at=Min("message__next_attempt_at"))["at"]
    if waiting is not None:
        seconds = (waiting - timezone.now()).total_seconds()
        return min(max(seconds, 0.5), RETRY_POLL_MAX)
    run_complete_if_final(run.pk)
    return None


def run_complete_if_final(run_id: int) -> bool:
    """Complete a running run none of whose recipients is waiting or in flight (by a recount)."""
    from campaigns.services.lifecycle import run_complete

    waiting = Recipient.objects.filter(run_id=run_id, state__in=[R.PENDING, R.HELD, R.SENDING]).exists()
    run = CampaignRun.objects.select_related("campaign").get(pk=run_id)
    if waiting or run.status != RunStatus.RUNNING:
        return False
    run_complete(run)
    return True


def chains_for(mps: int) -> int:
    """Dispatchers started for a run: enough to keep the MPS busy through ~30 ms provider calls."""
    return max(1, min(8, math.ceil((mps or 200) / 25)))


def dispatch_start(run_id: int, chains: int | None = None) -> None:
    """Start the run's dispatchers once the current transaction commits."""
    from campaigns.tasks import dispatch_run

    if chains is None:
        chains = chains_for(CampaignRun.objects.values_list("mps", flat=True).get(pk=run_id))

    def enqueue() -> None:
        for _ in range(chains):
            dispatch_run.delay(run_id)

    transaction.on_commit(enqueue, robust=True)


# --- Upkeep (celery-beat) ------------------------------------------------------------------


def run_expires_at(run: CampaignRun) -> datetime | None:
    validity = run.campaign.validity
    return run.started_at + validity if validity else None


def run_expire(run: CampaignRun, now: datetime | None = None) -> int:
    """Past the campaign's validity, waiting recipients are skipped 'expired'; returns how many."""
    expires_at = run_expires_at(run)
    now = now or timezone.now()
    if expires_at is None or now < expires_at:
        return 0
    with transaction.atomic():
        if _run_status_locked(run.pk) not in (RunStatus.RUNNING, RunStatus.PAUSED):
            return 0
        waiting = Recipient.objects.filter(run=run, state__in=[R.PENDING, R.HELD])
        held = waiting.filter(state=R.HELD).count()
        moved = waiting.update(state=R.SKIPPED, reason=SkipReason.EXPIRED, release_at=None)
        _counters_move(
            run.pk, {"pending": -(moved - held), "held": -held, "skipped": moved}, {SkipReason.EXPIRED: moved}
        )
        _messages_drop_expired(run.pk)
    return moved


def _messages_drop_expired(run_id: int) -> None:
    Message.objects.filter(recipient__run_id=run_id, recipient__state=R.SKIPPED, status=MessageStatus.PENDING).update(
        status=MessageStatus.SKIPPED, skip_reason="validity period expired", skipped_at=timezone.now()
    )


def _active_runs():
    return CampaignRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED]).select_related("campaign")


def held_release(now: datetime | None = None) -> int:
    """Held recipients whose quiet hours ended become pending (or expired); returns how many moved."""
    now = now or timezone.now()
    moved = 0
    for run in _active_runs():
        moved += run_expire(run, now)
        with transaction.atomic():
            status = _run_status_locked(run.pk)
            if status not in (RunStatus.RUNNING, RunStatus.PAUSED):
                continue
            released = Recipient.objects.filter(run=run, state=R.HELD, release_at__lte=now).update(
                state=R.PENDING, release_at=None
            )
            _counters_move(run.pk, {"held": -released, "pending": released})
            if released and status == RunStatus.RUNNING:
                dispatch_start(run.pk)
        moved += released
    return moved


def recipients_reap(now: datetime | None = None) -> int:
    """Settle claims whose outcome is known from their Message; requeue stale never-sent ones.

    Claims younger than 30 s are left to the dispatcher that holds them.
    """
    now = now or timezone.now()
    settled = 0
    for run in _active_runs():
        claims = (
            Recipient.objects.filter(run=run, state=R.SENDING, claimed_at__lt=now - timedelta(seconds=30))
            .select_related("message")
            .order_by("claimed_at")
        )
        for recipient in claims:
            outcome = (R.PENDING, "", "") if recipient.message is None else recipient_outcome(recipient.message)
            if outcome is None:
                continue  # at the provider's or unknown: the messaging reaper asks the provider first
            if (
                outcome[0] == R.PENDING
                and recipient.message is not None
                and recipient.claimed_at > now - STALE_CLAIM_AFTER
            ):
                continue  # not sent yet, and its dispatcher may still be alive
            settled += recipient_settle(run.pk, recipient.pk, outcome, now)
    return settled


def runs_kick(now: datetime | None = None) -> int:
    """Restart dispatch for running runs with pending recipients and no batch for a while."""
    now = now or timezone.now()
    quiet = Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=now - QUIET_RUN_AFTER)
    ids = list(CampaignRun.objects.filter(quiet, status=RunStatus.RUNNING, pending__gt=0).values_list("pk", flat=True))
    for run_id in ids:
        CampaignRun.objects.filter(pk=run_id).update(dispatched_at=now)
        dispatch_start(run_id)
    return len(ids)


def runs_complete() -> int:
    """Complete running runs whose recipients are all final."""
    ids = list(CampaignRun.objects.filter(status=RunStatus.RUNNING).values_list("pk", flat=True))
    return sum(run_complete_if_final(run_id) for run_id in ids)
