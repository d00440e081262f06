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

import functools
import logging
import math
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models import Max, Min, Q
from django.utils import timezone

from campaigns import pacing
from campaigns.models import CampaignKind, CampaignRun, Recipient, RecipientState, RunStatus, SkipReason
from config import sql
from messaging.models import Message, MessageStatus
from messaging.services import inflight
from messaging.services import outcomes as send_outcomes
from messaging.services import send as send_service
from messaging.services import send_batch as send_service_batch

logger = logging.getLogger(__name__)

R = RecipientState
BATCH_SECONDS = 2  # a batch holds about this many seconds of sends at the run's MPS
BATCH_MAX = 800  # unthrottled: fewer, larger batches (each costs a dozen statements and a counters sync)
STATUS_FRESH = 0.05  # seconds a read of the run's status is trusted before the next send
REDIS_DOWN_GIVE_UP = 120.0  # seconds a batch waits for Redis (pacing) before giving its claims back
# A claim older than this whose Message was never sent lost its worker: queue it again.
# The Message's own claim still guards against a double send if the worker was only slow.
STALE_CLAIM_AFTER = timedelta(seconds=120)
QUIET_RUN_AFTER = timedelta(seconds=60)
LEAD_WEIGHT = 0.1  # per send: how fast the hand-over lead follows the requests' lateness
RETRY_POLL_MAX = 5.0  # seconds; short countdowns only (the Redis broker redelivers long ones)

# The send service's skip texts and provider error codes, as recipient skip reasons.
SKIP_REASONS = {
    send_service.SKIP_OPTED_OUT: SkipReason.OPTED_OUT,
    send_service.SKIP_OUTSIDE_WINDOW: SkipReason.OUTSIDE_WINDOW,
}
SKIP_CODES = {"21610": SkipReason.OPTED_OUT, "63016": SkipReason.OUTSIDE_WINDOW}
MESSAGE_FAILURES = {MessageStatus.FAILED, MessageStatus.UNDELIVERED, MessageStatus.CANCELED}
ACTIVE_RUN_STATUSES = (RunStatus.RUNNING, RunStatus.PAUSED)


# --- Counters ------------------------------------------------------------------------------


def _counters_move(
    run_id: int, deltas: dict[str, int], reasons: dict[str, int] | None = None, dispatched_at: datetime | None = None
) -> None:
    """Add ``deltas`` to the run's counters (and skipped_by_reason) in one UPDATE; no read-modify-write."""
    sets, params = [], []
    if dispatched_at is not None:
        sets.append("dispatched_at = %s")
        params.append(dispatched_at)
    for name, delta in deltas.items():
        if delta:
            assert name in ("pending", "held", "sending", "sent", "skipped", "failed", "unknown")
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


def _recipients_take(run: CampaignRun, limit: int, now: datetime) -> list[tuple[int, int, int | None]]:
    """The claim: due pending recipients to ``sending`` (claimed_at = ``now``) with the run's counters."""
    with transaction.atomic():
        if _run_status_locked(run.pk) != RunStatus.RUNNING:
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
                RETURNING r.id, r.contact_id, r.message_id
                """,
                {"sending": str(R.SENDING), "pending": str(R.PENDING), "run": run.pk, "now": now, "limit": limit},
            )
            rows = sorted(cursor.fetchall())
        if rows:
            _counters_move(run.pk, {"pending": -len(rows), "sending": len(rows)}, dispatched_at=now)
    return rows


def _messages_link(
    run: CampaignRun, rows: list[tuple[int, int, int | None]], claimed_at: datetime
) -> list[tuple[int, int]]:
    """Create the missing Messages in one INSERT and link them in one UPDATE; returns the claims to send.

    Only claims still this dispatcher's (the claim time it wrote, no Message yet) are linked: one
    that waited past the reaper's patience may have been put back to pending, claimed and sent
    by another dispatcher since. The Messages of lost claims are deleted before this transaction
    commits (nothing saw or counted them) and their recipients are left out: nothing sends them.
    """
    missing = [(pk, contact_id) for pk, contact_id, message_id in rows if message_id is None]
    created: dict[int, int] = {}
    if missing:
        campaign = run.campaign
        created = send_service.messages_create_for_sources(
            template=campaign.template,
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
            tail_params=[str(R.SENDING), claimed_at],
        )
        if lost := set(created) - {pk for (pk,) in linked}:
            logger.warning("run %s: %d claims were reaped before their link; not sent here", run.pk, len(lost))
            Message.objects.filter(pk__in=[created.pop(pk) for pk in lost]).delete()
    return [(pk, message_id or created[pk]) for pk, _, message_id in rows if message_id or pk in created]


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
    if message.status == MessageStatus.UNKNOWN:
        return R.UNKNOWN, "", message.error_message[:255]
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
    run_id: int,
    outcomes: list[tuple[int, tuple[str, str, str]]],
    now: datetime | None = None,
    *,
    from_state: str = R.SENDING,
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
        cancelled = _run_status_locked(run_id) == RunStatus.CANCELLED
        rows = []
        for recipient_id, (state, reason, detail) in outcomes:
            if state == R.PENDING and cancelled:
                state, reason, detail = R.SKIPPED, SkipReason.CANCELLED, ""
            rows.append((recipient_id, str(state), str(reason), detail))
        moved = sql.values_update(
            "campaigns_recipient AS r",
            [("id", "bigint"), ("state", "varchar"), ("reason", "varchar"), ("detail", "varchar")],
            rows,
            "state = v.state, reason = v.reason, detail = v.detail, claimed_at = NULL, "
            "sent_at = CASE WHEN v.state = %s THEN %s::timestamptz ELSE r.sent_at END",
            "WHERE r.id = v.id AND r.state = %s RETURNING v.state, v.reason",
            set_params=[str(R.SENT), now],
            tail_params=[str(from_state)],
        )
        deltas: dict[str, int] = {str(from_state): -len(moved)}
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


class _RunWatch:
    """Is the run still running? Read again when the last read is older than STATUS_FRESH."""

    def __init__(self, run_id: int):
        self.run_id = run_id
        self.checked = -math.inf
        self.ok = True

    def running(self) -> bool:
        if time.monotonic() - self.checked >= STATUS_FRESH:
            self.ok = _running(self.run_id)
            self.checked = time.monotonic()
        return self.ok


def _pacer(sender_id: int, mps: int, watch: _RunWatch):
    """A ``pace(idle)`` callable for the send pipeline: blocks for the sender's next slot; False means stop.

    It returns a callable the sender thread calls once the request has been written: a send that
    left late moves its slot in the sender's log, so the window stays exact at the provider.
    ``idle`` runs while it waits (the pipeline records answers then).

    While Redis is unreachable (a restart) it waits and asks again, with capped backoff, as long
    as the run is running; past REDIS_DOWN_GIVE_UP it gives up and the batch gives its claims back.
    """

    lead = [0.0]  # how late requests usually leave against their slot (a moving mean)

    def started(slot: pacing.Slot) -> None:
        try:
            late = pacing.slot_started(sender_id, slot)
        except redis.RedisError:  # the slot keeps its time; the slack covers most lateness
            return
        if late is not None:  # hand over earlier while requests leave late, later while they leave early
            lead[0] = min(max(lead[0] + LEAD_WEIGHT * late, 0.0), pacing.MAX_LEAD)

    chunk = pacing.chunk_for(mps)
    stock = [0]  # sends left in the last chunk taken (senders above the exact log's range)

    def pace(idle=None):
        if stock[0] > 0:
            stock[0] -= 1
            return True
        delay, waited = 0.1, 0.0
        while True:
            try:
                slot = pacing.slot_take(sender_id, mps, keep_going=watch.running, count=chunk, idle=idle, lead=lead[0])
                if slot is not None:
                    stock[0] = chunk - 1
                return False if slot is None else functools.partial(started, slot)
            except redis.RedisError as exc:
                if waited >= REDIS_DOWN_GIVE_UP or not watch.running():
                    logger.warning("pacing unavailable for sender %s, giving the batch back: %s", sender_id, exc)
                    return False
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)

    return pace


class RunDispatcher:
    """Sends one run's recipients batch after batch through one send pipeline.

    A batch is claimed as soon as the previous one is handed over, while that one's slowest
    requests are still out: the in-flight cap (the sender's MPS times the provider's latency),
    not the batch, bounds what is at the provider at once. Recipients are settled as their
    answers are recorded. ``close`` waits for the requests still out.
    """

    def __init__(self, run_id: int):
        self.run_id = run_id
        self.pipeline: send_service_batch.SendPipeline | None = None
        self.claims: dict[int, int] = {}  # message id -> recipient id: handed over, not settled yet

    def batch(self) -> tuple[int, float | None]:
        """Claim and hand over one batch; returns (recipients claimed, seconds until the next batch or None).

        None means nothing is left for this dispatcher (the run is done, paused, cancelled or
        only has claims other workers hold); a number asks to be run again after that delay.
        """
        runs = CampaignRun.objects.select_related("campaign__sender", "campaign__template")
        run = runs.filter(pk=self.run_id).first()
        if run is None or run.status != RunStatus.RUNNING:
            return 0, None
        run_expire(run)
        sender = run.campaign.sender
        mps = min(run.mps, sender.effective_mps) if run.mps else sender.effective_mps
        claimed = recipients_claim(run, batch_size(mps))
        if not claimed:
            self.drain()
            return 0, _after_empty_claim(run)
        pipeline = self._pipeline(sender.pk, mps)
        self.claims.update((message_id, recipient_id) for recipient_id, message_id in claimed)
        watch = _RunWatch(self.run_id)
        unsent = pipeline.send(
            [message_id for _, message_id in claimed], pace=_pacer(sender.pk, mps, watch), keep_going=watch.running
        )
        if unsent:
            recipients_release(self.run_id, [self.claims.pop(message_id) for message_id in unsent])
            return len(claimed) - len(unsent), None
        return len(claimed), 0.0

    def drain(self) -> None:
        if self.pipeline is not None:
            self.pipeline.drain()

    def close(self) -> None:
        """Wait for the requests still out, settle them, and complete the run if that was its last."""
        self.drain()
        if self.pipeline is not None:
            run_complete_if_final(self.run_id)

    def _pipeline(self, sender_id: int, mps: int) -> send_service_batch.SendPipeline:
        if self.pipeline is None:
            limit = inflight.InFlightLimit(mps, inflight.latency_gauge(sender_id))
            self.pipeline = send_service_batch.SendPipeline(limit=limit, on_recorded=self._settle, sender_id=sender_id)
        return self.pipeline

    def _settle(self, messages: list[Message]) -> None:
        outcomes = []
        for message in messages:
            recipient_id = self.claims.pop(message.pk, None)
            if recipient_id is not None and (outcome := recipient_outcome(message)) is not None:
                outcomes.append((recipient_id, outcome))
        recipients_settle(self.run_id, outcomes)


def sends_in_flight(sender_id: int, mps: int) -> int:
    """The calls one dispatcher of this sender may have at the provider now."""
    return inflight.InFlightLimit(mps, inflight.latency_gauge(sender_id)).cap()


def run_dispatch_batch(run_id: int) -> tuple[int, float | None]:
    """Claim and send one batch of a run and wait for its answers (``RunDispatcher.batch``, closed)."""
    dispatcher = RunDispatcher(run_id)
    try:
        return dispatcher.batch()
    finally:
        dispatcher.drain()


def _after_empty_claim(run: CampaignRun) -> float | None:
    """Nothing was due: wait for retries, or close the run if everyone is final."""
    waiting = Recipient.objects.filter(run=run, state=R.PENDING).aggregate(at=Min("message__next_attempt_at"))["at"]
    if waiting is not None:
        seconds = (waiting - timezone.now()).total_seconds()
        return min(max(seconds, 0.5), RETRY_POLL_MAX)
    run_complete_if_final(run.pk)
    return None


def run_complete_if_final(run_id: int) -> bool:
    """Complete a running run none of whose recipients is waiting or in flight (by a recount).

    Outcomes unknown do not keep it open: they are final for the run and settle later. The run
    row is locked before the recount, as every move of a recipient locks it: one going back to
    pending (an unknown outcome the provider never created) cannot slip in between.
    """
    from campaigns.services.lifecycle import run_complete

    with transaction.atomic():
        if _run_status_locked(run_id) != RunStatus.RUNNING:
            return False
        if Recipient.objects.filter(run_id=run_id, state__in=[R.PENDING, R.HELD, R.SENDING]).exists():
            return False
        run = CampaignRun.objects.select_related("campaign").get(pk=run_id)
        run_complete(run)
    _capacity_learn(run)
    return True


def _capacity_learn(run: CampaignRun) -> None:
    """A big run that went slower than its MPS allowed measured what the platform sustains.

    Its rate is taken over the span its recipients were sent in (what ``duration_estimate``
    divides by the capacity), not from the launch to the last answer.
    """
    run.refresh_from_db(fields=["sent", "status"])
    if run.status != RunStatus.COMPLETED or run.sent < CAPACITY_MIN_RUN:
        return
    span = Recipient.objects.filter(run=run, state=R.SENT).aggregate(first=Min("sent_at"), last=Max("sent_at"))
    if span["first"] is None:
        return
    rate = run.sent / max((span["last"] - span["first"]).total_seconds(), 0.001)
    paused = run.campaign.actions.filter(action="pause", created_at__gte=run.started_at).exists()
    if rate * 2 < run.mps and not paused:
        inflight.capacity_observe(rate)


# Seconds from a launch to the first request beyond the snapshot: the dispatcher's task starts, claims, renders.
LAUNCH_OVERHEAD = 0.3
UNMEASURED_TAIL = 4  # a provider's 99th percentile, in means, until one is measured (log-normal, sigma ~0.8)
CAPACITY_MIN_RUN = 1000  # sends: smaller runs measure start-up more than throughput


def duration_estimate(count: int, mps: int, sender_id: int) -> float:
    """Seconds to send ``count`` messages at ``mps`` from launch to the last answer.

    Paced by the sender's log (``pacing``), ``mps`` leave per window, and a window lasts
    ``pacing.WINDOW``; a sender faster than the platform sustains goes at the platform's measured
    rate (``inflight.capacity``). The last of many answers comes back at about the tail of the
    provider's observed latency (its 99th percentile).
    """
    if count <= 0:
        return 0.0
    observed = inflight.latency_observed(sender_id)
    latency = observed.tail if observed else settings.DELIVERY_LATENCY_GUESS * UNMEASURED_TAIL
    rate = inflight.capacity()
    if mps and mps < rate:
        sending = (math.ceil(count / mps) - 1) * pacing.WINDOW
    else:
        sending = count / rate
    return LAUNCH_OVERHEAD + sending + latency


def chains_for(mps: int) -> int:
    """Dispatchers started for a run: each sends through a pool of threads (~500/s through a 30 ms
    provider), so one covers a paced sender; a fast one gets a few, spread over worker processes."""
    return max(1, min(4, math.ceil((mps or 200) / 250)))


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
    if run.campaign.kind == CampaignKind.TRIGGERED:
        return None  # a triggered run lives on; its recipients expire one by one (run_expire)
    return run.started_at + validity if validity else None


def run_expire(run: CampaignRun, now: datetime | None = None) -> int:
    """Past the campaign's validity, waiting recipients are skipped 'expired'; returns how many.

    A snapshot's recipients expire with their run (its start plus the validity). A
    triggered run lives on, and each recipient expires with its event: the validity
    counts from when the event happened, or from when it was queued if that was
    earlier, as ``recipient_decide`` counted it. Without this, a triggered campaign
    paused longer than its validity (or behind a long queue) would send stale answers.
    Runs before every batch's claim, and from celery-beat for paused runs and held recipients.
    """
    now = now or timezone.now()
    validity = run.campaign.validity
    if run.campaign.kind == CampaignKind.TRIGGERED:
        if not validity:
            return 0
        due = now - validity
        stale = Q(event__occurred_at__lte=due) | Q(created_at__lte=due)
    else:
        expires_at = run_expires_at(run)
        if expires_at is None or now < expires_at:
            return 0
        stale = Q()
    with transaction.atomic():
        if _run_status_locked(run.pk) not in (RunStatus.RUNNING, RunStatus.PAUSED):
            return 0
        waiting = Recipient.objects.filter(stale, run=run, state__in=[R.PENDING, R.HELD])
        held = waiting.filter(state=R.HELD).count()
        moved = waiting.update(state=R.SKIPPED, reason=SkipReason.EXPIRED, release_at=None)
        _counters_move(
            run.pk, {"pending": -(moved - held), "held": -held, "skipped": moved}, {SkipReason.EXPIRED: moved}
        )
        if moved:
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
    """Settle claims and unknown outcomes whose result their Message now tells; requeue stale never-sent ones.

    Claims younger than 30 s are left to the dispatcher that holds them. Runs of every status are
    looked at while they count recipients in `sending` or `unknown`: an outcome found after the
    run completed or was cancelled still moves its recipient, and the counters with it.
    """
    now = now or timezone.now()
    settled = 0
    runs = CampaignRun.objects.filter(Q(sending__gt=0) | Q(unknown__gt=0)).order_by("pk")
    for run_id in runs.values_list("pk", flat=True):
        due = Q(state=R.SENDING, claimed_at__lt=now - timedelta(seconds=30))
        moved_on = Q(state=R.UNKNOWN) & ~Q(message__status=MessageStatus.UNKNOWN)
        recipients = (
            Recipient.objects.filter(due | moved_on, run_id=run_id).select_related("message").order_by("claimed_at")
        )
        settled += recipients_follow(run_id, recipients, now)
    return settled


def recipients_follow(
    run_id: int, recipients: Iterable[Recipient], now: datetime | None = None, *, patient: bool = True
) -> int:
    """Move each recipient (claimed or unknown) to what its Message now says; returns how many moved.

    ``patient``: a claim whose Message is still pending is left to its dispatcher for
    STALE_CLAIM_AFTER (a staff resend, whose message no dispatcher holds, does not wait).
    """
    now = now or timezone.now()
    moved = 0
    for recipient in recipients:
        message = recipient.message
        outcome = (R.PENDING, "", "") if message is None else recipient_outcome(message)
        if outcome is None or outcome[0] == recipient.state:
            continue  # at the provider's or unknown: the messaging reaper asks the provider first
        if patient and outcome[0] == R.PENDING and recipient.state == R.SENDING and message is not None:
            if recipient.claimed_at > now - STALE_CLAIM_AFTER:
                continue  # not sent yet, and its dispatcher may still be alive
        moved += _recipient_follow(run_id, recipient, outcome, now)
    return moved


def _recipient_follow(run_id: int, recipient: Recipient, outcome: tuple[str, str, str], now: datetime) -> int:
    with transaction.atomic():
        status = _run_status_locked(run_id)
        if outcome[0] == R.PENDING and status not in ACTIVE_RUN_STATUSES:
            if status == RunStatus.CANCELLED and recipient.state == R.SENDING:
                # Never sent, and the campaign was cancelled: skipped 'cancelled' (recipients_settle).
                moved = recipients_settle(run_id, [(recipient.pk, outcome)], now)
                _messages_drop([recipient.pk])
                return moved
            # Never created at the provider, and its run is over: nothing is sent after a run's end.
            if recipient.message_id and not send_outcomes.message_fail_unsent(recipient.message_id):
                return 0  # the message moved meanwhile: the next pass follows it
            outcome = (R.FAILED, "unsent", send_outcomes.UNSENT_RUN_ENDED)
        return recipients_settle(run_id, [(recipient.pk, outcome)], now, from_state=recipient.state)


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
