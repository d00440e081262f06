"""Delivering a run: claim recipients in batches, pace per sender, send, record, keep counts exact.

A recipient moves pending -> sending when a dispatcher claims it (one ``UPDATE ... WHERE id IN
(SELECT ... FOR UPDATE SKIP LOCKED)`` in the transaction that also moves the run's counters);
the claimed recipients' Messages are then created in bulk and linked where the claim is still
this dispatcher's (a reaped claim may be another's by then). A batch is sent through
``messaging.services.send_batch.messages_send_batch``, whose own claim on the Messages (one
conditional UPDATE) is what makes a send happen at most once: a recipient claimed twice (a
reaped claim, a redelivered task) still reaches the provider once. That service records the
intent (the rendered message, in ``sending``) before any provider call, sends through a pool
of threads each paced by the sender's Redis token log right before its HTTP request, and writes
the outcomes in one statement. The recipients then move to sent, skipped or failed (or back to
pending for a retry) with one conditional UPDATE in the same transaction as the counter change,
so ``pending + held + sending + sent + skipped + failed + unknown`` always equals ``total`` and
every counter equals a recount.

The run's status is read before each batch and, at most ``STATUS_FRESH`` seconds old, before
each send: after a pause or cancel is stored, nothing new goes to the provider (a send already
at the provider finishes). Claimed but unsent recipients go back to pending (or skipped
'cancelled').

A worker that dies leaves recipients in ``sending``. ``recipients_reap`` settles them from their
Message, never by resending: a Message with a provider sid is sent; one still pending was never
sent (safe to queue again); one in ``sending`` without a sid is left to the messaging reaper,
which asks the provider first. When the provider cannot be asked the Message is ``unknown`` and
so is its recipient: final for the run (which completes without it), followed afterwards
whatever the run's status (found: sent; never created: pending again while the run is active,
failed once it has ended, so nothing is sent after a run's end).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models import F, Func, IntegerField, JSONField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from campaigns.models import CampaignRun, Recipient, RecipientState, RunStatus, SkipReason
from campaigns.services import arms, estimates
from campaigns.services.chains import chain_claim
from config import sql
from messaging.models import Message, MessageStatus
from messaging.providers import ErrorKind, error_kind
from messaging.services import create as create_service
from messaging.services import send as send_service

logger = logging.getLogger(__name__)

BATCH_SECONDS = 2  # a batch holds about this many seconds of sends at the run's MPS
BATCH_MAX = 800  # unthrottled: fewer, larger batches (each costs a dozen statements and a counters sync)

# The send service's skip texts and provider error codes, as recipient skip reasons.
SKIP_REASONS = {
    send_service.SKIP_OPTED_OUT: SkipReason.OPTED_OUT,
    send_service.SKIP_OUTSIDE_WINDOW: SkipReason.OUTSIDE_WINDOW,
}
# A provider refusal that means the person should not get this message: skipped, not failed.
SKIPPING_KINDS = {ErrorKind.OPTED_OUT: SkipReason.OPTED_OUT, ErrorKind.OUTSIDE_WINDOW: SkipReason.OUTSIDE_WINDOW}
MESSAGE_FAILURES = {MessageStatus.FAILED, MessageStatus.UNDELIVERED, MessageStatus.CANCELED}


# --- Counters ------------------------------------------------------------------------------


def run_counters_move(
    run_id: int, deltas: dict[str, int], reasons: dict[str, int] | None = None, dispatched_at: datetime | None = None
) -> None:
    """Add ``deltas`` to the run's counters (and skipped_by_reason) in one UPDATE; no read-modify-write."""
    updates: dict[str, Any] = {name: F(name) + delta for name, delta in deltas.items() if delta}
    if dispatched_at is not None:
        updates["dispatched_at"] = dispatched_at
    if reasons := {reason: count for reason, count in (reasons or {}).items() if count}:
        updates["skipped_by_reason"] = _reasons_added(reasons)
    if updates:
        CampaignRun.objects.filter(pk=run_id).update(**updates)


def _reasons_added(reasons: dict[str, int]) -> Func:
    """``skipped_by_reason || {reason: its count + n, ...}``: each reason's count moves in the statement."""
    pairs = []
    for reason, count in reasons.items():
        before = Cast(KeyTextTransform(reason, "skipped_by_reason"), IntegerField())
        pairs += [Value(reason), Coalesce(before, 0) + count]
    return Func(
        Coalesce(F("skipped_by_reason"), Value({}, JSONField())),
        Func(*pairs, function="jsonb_build_object", output_field=JSONField()),
        template="%(expressions)s",
        arg_joiner=" || ",
        output_field=JSONField(),
    )


def run_status_locked(run_id: int) -> str:
    return CampaignRun.objects.select_for_update().values_list("status", flat=True).get(pk=run_id)


# --- Claiming ------------------------------------------------------------------------------


def batch_size(mps: int) -> int:
    return max(1, min(BATCH_MAX, (mps or BATCH_MAX) * BATCH_SECONDS))


def recipients_claim(run: CampaignRun, limit: int, now: datetime | None = None) -> list[tuple[int, int]]:
    """Claim up to ``limit`` due pending recipients; returns [(recipient_id, message_id)] in id order.

    Recipients waiting for a retry (their Message has a future next_attempt_at) are not due.
    Recipients without a Message get one here, right after the claim commits.
    """
    now = now or timezone.now()
    rows = _recipients_take(run, limit, now)
    if not rows:
        return []
    # Outside the claim: the run row stays locked only for the counter move. A crash here leaves
    # claims without a Message, which the reaper puts back to pending.
    with transaction.atomic():
        return _messages_link(run, rows, now)


def _recipients_take(run: CampaignRun, limit: int, now: datetime) -> list[tuple[int, int, int | None, int | None]]:
    """The claim: due pending recipients to ``sending`` (claimed_at = ``now``) with the run's counters."""
    with transaction.atomic():
        if run_status_locked(run.pk) != RunStatus.RUNNING:
            return []
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE campaigns_recipient AS r SET state = %(sending)s, claimed_at = %(now)s
                FROM (
                    SELECT c.id FROM campaigns_recipient c
                    LEFT JOIN messaging_message m ON m.id = c.message_id
                    WHERE c.run_id = %(run)s AND c.state = %(pending)s
                      AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= %(now)s)
                    ORDER BY c.id
                    LIMIT %(limit)s
                    FOR UPDATE OF c SKIP LOCKED
                ) AS due
                WHERE r.id = due.id
                RETURNING r.id, r.contact_id, r.message_id, r.arm
                """,
                {
                    "sending": str(RecipientState.SENDING),
                    "pending": str(RecipientState.PENDING),
                    "run": run.pk,
                    "now": now,
                    "limit": limit,
                },
            )
            rows = sorted(cursor.fetchall())
        if rows:
            run_counters_move(run.pk, {"pending": -len(rows), "sending": len(rows)}, dispatched_at=now)
    return rows


def _messages_link(
    run: CampaignRun, rows: list[tuple[int, int, int | None, int | None]], claimed_at: datetime
) -> list[tuple[int, int]]:
    """Create the missing Messages in one INSERT and link them in one UPDATE; returns the claims to send.

    Only claims still this dispatcher's (the claim time it wrote, no Message yet) are linked: one
    that waited past the reaper's patience may have been put back to pending, claimed and sent
    by another dispatcher since. The Messages of lost claims are deleted before this transaction
    commits (nothing saw or counted them) and their recipients are left out: nothing sends them.
    """
    by_arm: dict[int | None, list[tuple[int, int]]] = {}
    for pk, contact_id, message_id, arm in rows:
        if message_id is None:
            by_arm.setdefault(arm, []).append((pk, contact_id))
    created: dict[int, int] = {}
    if by_arm:
        campaign = run.campaign
        templates = arms.templates_by_arm(campaign) if set(by_arm) != {None} else {None: campaign.template}
        for arm, missing in by_arm.items():  # each arm sends its variant's template
            created |= create_service.messages_create_for_sources(
                template=templates.get(arm, campaign.template),
                sender=campaign.sender,
                source_type=ContentType.objects.get_for_model(Recipient),
                sources=missing,
            )
        linked = sql.values_update(
            "campaigns_recipient AS r",
            [("id", "bigint"), ("message_id", "bigint")],
            list(created.items()),
            "message_id = v.message_id",
            "WHERE r.id = v.id AND r.message_id IS NULL AND r.state = %s AND r.claimed_at = %s RETURNING r.id",
            tail_params=[str(RecipientState.SENDING), claimed_at],
        )
        if lost := set(created) - {pk for (pk,) in linked}:
            logger.warning("run %s: %d claims were reaped before their link; not sent here", run.pk, len(lost))
            Message.objects.filter(pk__in=[created.pop(pk) for pk in lost]).delete()
    return [(pk, message_id or created[pk]) for pk, _, message_id, _ in rows if message_id or pk in created]


# --- Outcomes ------------------------------------------------------------------------------


def recipient_outcome(message: Message) -> tuple[str, str, str] | None:
    """(state, reason, detail) a recipient takes from its Message; None while the outcome is unknown."""
    if message.provider_sid:
        return RecipientState.SENT, "", ""
    if message.status == MessageStatus.SKIPPED:
        return RecipientState.SKIPPED, SKIP_REASONS.get(message.skip_reason, _missing_or_other(message.skip_reason)), ""
    if message.status in MESSAGE_FAILURES:
        skip_reason = SKIPPING_KINDS.get(error_kind(message.error_code))
        if skip_reason:
            return RecipientState.SKIPPED, skip_reason, message.error_message[:255]
        return RecipientState.FAILED, (message.error_code or "failed")[:32], message.error_message[:255]
    if message.status == MessageStatus.UNKNOWN:
        return RecipientState.UNKNOWN, "", message.error_message[:255]
    if message.status == MessageStatus.PENDING:
        return RecipientState.PENDING, "", ""
    return None  # sending without a sid: the provider is asked first (messaging reconcile)


def _missing_or_other(skip_reason: str) -> str:
    return SkipReason.MISSING_VARIABLE if skip_reason.startswith("missing variable") else skip_reason[:32]


def recipient_settle(
    run_id: int, recipient_id: int, outcome: tuple[str, str, str], now: datetime | None = None
) -> bool:
    """Move one claimed recipient to its outcome with the counters, if it is still claimed."""
    return recipients_settle(run_id, [(recipient_id, outcome)], now) == 1


def recipients_settle(
    run_id: int,
    outcomes: list[tuple[int, tuple[str, str, str]]],
    now: datetime | None = None,
    *,
    from_state: str = RecipientState.SENDING,
) -> int:
    """Move claimed recipients to their outcomes and the run's counters with them, in one transaction.

    One conditional UPDATE (only rows still in ``from_state`` move) and one counter UPDATE, so a
    batch's outcomes cost two statements and one commit, and the run row is locked once.
    Returns how many recipients moved.
    """
    if not outcomes:
        return 0
    now = now or timezone.now()
    with transaction.atomic():
        cancelled = run_status_locked(run_id) == RunStatus.CANCELLED
        rows = []
        for recipient_id, (state, reason, detail) in outcomes:
            if state == RecipientState.PENDING and cancelled:
                state, reason, detail = RecipientState.SKIPPED, SkipReason.CANCELLED, ""
            rows.append((recipient_id, str(state), str(reason), detail))
        moved = sql.values_update(
            "campaigns_recipient AS r",
            [("id", "bigint"), ("state", "varchar"), ("reason", "varchar"), ("detail", "varchar")],
            rows,
            "state = v.state, reason = v.reason, detail = v.detail, claimed_at = NULL, "
            "sent_at = CASE WHEN v.state = %s THEN %s::timestamptz ELSE r.sent_at END",
            "WHERE r.id = v.id AND r.state = %s RETURNING v.state, v.reason",
            set_params=[str(RecipientState.SENT), now],
            tail_params=[str(from_state)],
        )
        deltas: dict[str, int] = {str(from_state): -len(moved)}
        reasons: dict[str, int] = {}
        for state, reason in moved:
            deltas[state] = deltas.get(state, 0) + 1
            if state == RecipientState.SKIPPED:
                reasons[reason] = reasons.get(reason, 0) + 1
        run_counters_move(run_id, deltas, reasons)
    return len(moved)


def recipients_release(run_id: int, recipient_ids: Iterable[int]) -> int:
    """Give back claimed recipients that were not sent: pending again, or skipped if the run was cancelled."""
    ids = list(recipient_ids)
    if not ids:
        return 0
    with transaction.atomic():
        cancelled = run_status_locked(run_id) == RunStatus.CANCELLED
        claimed = Recipient.objects.filter(pk__in=ids, state=RecipientState.SENDING)
        if cancelled:
            moved = claimed.update(state=RecipientState.SKIPPED, reason=SkipReason.CANCELLED, claimed_at=None)
            run_counters_move(run_id, {"sending": -moved, "skipped": moved}, {SkipReason.CANCELLED: moved})
            messages_drop(ids)
        else:
            moved = claimed.update(state=RecipientState.PENDING, claimed_at=None)
            run_counters_move(run_id, {"sending": -moved, "pending": moved})
    return moved


def messages_drop(recipient_ids: list[int]) -> None:
    """Unsent Messages of skipped recipients are skipped too, so nothing ever sends them."""
    Message.objects.filter(
        recipient__pk__in=recipient_ids, recipient__state=RecipientState.SKIPPED, status=MessageStatus.PENDING
    ).update(status=MessageStatus.SKIPPED, skip_reason="campaign cancelled", skipped_at=timezone.now())


def run_complete_if_final(run_id: int) -> bool:
    """Complete a running run none of whose recipients is waiting or in flight (by a recount).

    Outcomes unknown do not keep it open: they are final for the run and settle later. The run
    row is locked before the recount, as every move of a recipient locks it: one going back to
    pending (an unknown outcome the provider never created) cannot slip in between.
    """
    from campaigns.services.lifecycle import run_complete

    with transaction.atomic():
        if run_status_locked(run_id) != RunStatus.RUNNING:
            return False
        if Recipient.objects.filter(
            run_id=run_id, state__in=[RecipientState.PENDING, RecipientState.HELD, RecipientState.SENDING]
        ).exists():
            return False
        run = CampaignRun.objects.select_related("campaign").get(pk=run_id)
        run_complete(run)
    estimates.capacity_learn(run)
    return True


def chains_for(mps: int) -> int:
    """Dispatchers started for a run: each sends through a pool of threads (~500/s through a 30 ms
    provider), so one covers a paced sender; a fast one gets a few, spread over worker processes."""
    return max(1, min(4, math.ceil((mps or 200) / 250)))


def dispatch_start(run_id: int, chains: int | None = None) -> None:
    """Start the run's dispatchers that are not running, once the current transaction commits.

    Each dispatcher holds a place (``chain``) in Redis, kept alive by its batches: a place whose
    dispatcher died (a SIGKILLed worker, a task lost with the broker) frees itself within
    CHAIN_TTL, and the next start (beat's ``runs_kick``, every 30 s) fills it. Starting a run
    whose dispatchers all run does nothing.
    """
    from campaigns.tasks import run_dispatch

    if chains is None:
        chains = chains_for(CampaignRun.objects.values_list("mps", flat=True).get(pk=run_id))

    def enqueue() -> None:
        for chain in range(chains):
            token = chain_claim(run_id, chain)
            if token:
                run_dispatch.delay(run_id, chain, token)

    transaction.on_commit(enqueue, robust=True)
