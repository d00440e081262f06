"""Sending many messages at once, with the same exactly-once rules as ``send.message_send``.

``SendPipeline`` is the campaigns' path: a few statements per batch instead of a dozen per
message, and as many provider calls in flight as the sender's rate needs at the provider's
latency (``messaging.services.inflight``).

1. ``send(ids)`` loads a batch's pending messages with their contacts (the consent check for the
   whole batch) and renders them in Python; then, slice by slice (``CLAIM_SLICE``), claims them
   with what will be sent in one conditional ``UPDATE ... FROM unnest(...) ... RETURNING`` (a
   message another batch claimed meanwhile is not returned, and not sent here). From its commit
   on, a message in ``sending`` without a sid is one the provider may hold: the reconciler asks
   the provider before anything is sent again, as for ``message_send``; a slice at a time keeps
   what a killed worker leaves to be looked up small.
2. It then hands the messages one by one to a pool of sender threads (each with its own provider
   client and kept-alive connections), taking a pacing token right before each hand-over, so the
   token is spent when the HTTP request leaves, and never more than the in-flight cap at once.
   Before each hand-over it asks ``keep_going`` (pause, cancel) and, at most ``send_rows.RECHECK_EVERY``
   apart, re-reads the consent of the contacts not sent yet in one query: a STOP that arrives
   mid-batch is honoured. A batch held up past ``CLAIM_SEND_WINDOW`` (a Redis outage stalls
   pacing) sends nothing more: by then the reaper may be reconciling its claims, and could send
   them again. ``send`` returns once the batch is handed over, not when its last answer is back:
   the caller claims the next batch while this one's slowest requests are still out.
3. Answers are written as they come back, at most ``FLUSH_EVERY`` apart, in one ``UPDATE ... FROM
   unnest(...)`` (sid, status, error, retry time), from the caller's thread while it waits for a
   pacing slot or a free sender; messages claimed but never handed over go back to ``pending``.
   ``on_recorded`` hears of every message whose outcome was written, and
   ``message_statuses_changed`` tells the apps above which messages moved. ``drain`` waits for
   the requests still out and writes their answers.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from messaging.links.rewrite import links_save
from messaging.models import Message, MessageStatus
from messaging.providers import (
    ErrorKind,
    ProviderError,
    get_provider,
    provider_name_for,
)
from messaging.services import inflight, send
from messaging.services.send_outcomes import STALE_SENDING_AFTER
from messaging.services.send_rows import (
    ConsentWatch,
    Outcome,
    claim,
    claimed_in_memory,
    early_callbacks_apply,
    row_for,
    row_skipped,
    rows_write,
    unclaim,
    with_senders_and_templates,
)
from messaging.signals import message_statuses_changed

logger = logging.getLogger(__name__)


CLAIM_SLICE = 200  # messages claimed at once, as the hand-over reaches them
FLUSH_EVERY = 0.2  # seconds between writes of the answers that came back
FLUSH_AT = 500  # answers waiting: write them without waiting for FLUSH_EVERY
PUBLISH_EVERY = 1.0  # seconds between publications of the observed latency
# Seconds after its claim a batch may still hand a message to the provider; the rest go back to
# pending. Half the age at which the messaging reaper reconciles (and may resend) a claim.
CLAIM_SEND_WINDOW = STALE_SENDING_AFTER.total_seconds() / 2

_executor_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """The process's sender threads: as many as DELIVERY_MAX_IN_FLIGHT, started as they are needed.

    Hundreds of threads that mostly wait on sockets each ask for the GIL when an answer comes
    back; at Python's default switch interval (5 ms) they keep interrupting the one thread that
    claims, renders and records, and the process spends its time handing the lock around. A
    longer interval (DELIVERY_GIL_SWITCH_INTERVAL) measured 11 % more sends a second unthrottled.
    """
    global _executor
    with _executor_lock:
        if _executor is None:
            sys.setswitchinterval(settings.DELIVERY_GIL_SWITCH_INTERVAL)
            _executor = ThreadPoolExecutor(max_workers=settings.DELIVERY_MAX_IN_FLIGHT, thread_name_prefix="send")
        return _executor


@dataclass
class BatchResult:
    messages: dict[int, Message] = field(default_factory=dict)  # every id asked for, in its state after the batch
    unsent: list[int] = field(default_factory=list)  # claimed here, never handed over: pending again


class SendPipeline:
    """Batches of one sender's messages through the sender threads, answers recorded as they come.

    Used from one thread (the dispatcher's); the sender threads only make the provider calls.
    ``limit`` sizes the calls in flight (``inflight.InFlightLimit``), or ``concurrency`` fixes it.
    """

    def __init__(
        self,
        *,
        limit: inflight.InFlightLimit | None = None,
        concurrency: int | None = None,
        on_recorded: Callable[[list[Message]], None] | None = None,
        sender_id: int | None = None,
    ):
        self.limit = limit
        self.concurrency = concurrency or settings.DELIVERY_MAX_IN_FLIGHT
        self.on_recorded = on_recorded
        self.sender_id = sender_id
        self._cond = threading.Condition()
        self._in_flight = 0
        self._done: list[Outcome] = []
        self._flushed_at = time.monotonic()
        self._flush_cost = 0.01  # seconds a write of answers takes (a moving mean)
        self._published_at = 0.0

    # --- sending ---------------------------------------------------------------------------

    def send(
        self,
        message_ids: Sequence[int],
        *,
        pace: Callable[..., Any] = lambda idle=None: True,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> list[int]:
        """Claim and hand over the pending messages among ``message_ids``; returns those put back unsent.

        ``pace(idle)`` blocks until one more message may leave (False: stop), running ``idle``
        while it waits; when it returns a callable, the sender thread calls it right before the
        request leaves. ``keep_going`` is asked before each hand-over (False: stop).
        """
        now = timezone.now()
        candidates = with_senders_and_templates(
            Message.objects.select_related("contact").filter(send.claimable(now), pk__in=list(message_ids))
        )
        verdicts = [(message, send.send_refusal(message, now) or send.render_fill(message)) for message in candidates]
        links_save(message for message, reason in verdicts if not reason)  # before any claim: they answer when sent
        verdicts.sort(key=lambda verdict: verdict[0].pk)
        claimed_any: set[int] = set()
        for start in range(0, len(verdicts), CLAIM_SLICE):
            unsent = self._slice_send(verdicts[start : start + CLAIM_SLICE], claimed_any, pace, keep_going)
            if unsent is not None:
                rest = [message.pk for message, _ in verdicts[start + CLAIM_SLICE :]]  # never claimed: pending
                self._reread_others(message_ids, claimed_any, skip=rest)
                return unsent + rest
        self._reread_others(message_ids, claimed_any)
        return []

    def _slice_send(self, verdicts, claimed_any: set[int], pace, keep_going) -> list[int] | None:
        """Claim a slice with what will be sent (one conditional UPDATE), then hand it over.

        Claiming slice by slice, not the whole batch, keeps what a killed worker leaves in
        ``sending`` (to be looked up at the provider) to a slice and the requests in flight.
        Returns the slice's messages put back unsent, or None when all of it was handed over.
        """
        if not keep_going():
            return [message.pk for message, _ in verdicts]
        now = timezone.now()
        # Past half the reaper's patience the claims are no longer trusted to be this slice's: the
        # messaging reaper may be asking the provider about them (and send them again if not found).
        claim_trusted_until = time.monotonic() + CLAIM_SEND_WINDOW
        claimed = claim([message for message, _ in verdicts], now)
        claimed_any.update(claimed)
        ready, refused = [], []
        for message, reason in verdicts:
            if message.pk in claimed:  # another batch may have claimed it since it was read
                claimed_in_memory(message, now, claimed[message.pk])
                if reason:
                    refused.append(Outcome(message, skip=reason))
                else:
                    ready.append(message)
        if refused:
            self._flush(refused)
        unsent = self._hand_over(ready, pace, lambda: time.monotonic() < claim_trusted_until and keep_going())
        unclaim([message.pk for message in unsent], now)
        return [message.pk for message in unsent] if unsent else None

    def _reread_others(self, message_ids: Sequence[int], claimed: set[int], skip: Sequence[int] = ()) -> None:
        """Messages asked for but not claimed here (sent, claimed by another batch, not due): as stored."""
        left = set(skip)
        others = [pk for pk in message_ids if pk not in claimed and pk not in left]
        if others:
            self._flush([], reread=others)

    def drain(self) -> None:
        """Wait for every request still out and record its answer."""
        while True:
            with self._cond:
                if not self._in_flight and not self._done:
                    return
                if self._in_flight and not self._done:
                    self._cond.wait(timeout=FLUSH_EVERY)
                batch, self._done = self._done, []
            if batch:
                self._flush(batch)

    def _cap(self) -> int:
        return self.limit.cap() if self.limit is not None else self.concurrency

    def _hand_over(self, messages: list[Message], pace, keep_going: Callable[[], bool]) -> list[Message]:
        """Hand the messages to the sender threads, paced; returns those never handed over."""
        consent = ConsentWatch([m.contact_id for m in messages if m.contact_id])
        for index, message in enumerate(messages):
            if not self._slot_take(keep_going):  # a free sender first, so the token is spent when the request leaves
                return messages[index:]
            token = pace(self.flush_if_due)
            if not token or not keep_going():
                self._slot_return()
                return messages[index:]
            if consent.opted_out(message.contact_id):
                self._finished(Outcome(message, skip=send.SKIP_OPTED_OUT))
                continue
            consent.sent(message.contact_id)
            outcome = Outcome(message)
            name = provider_name_for(send.sender_of(message).provider)
            request = send.send_request_for(message)
            started = token if callable(token) else None
            if name == "simulated":  # no network: inline, on this thread's database connection
                _call(outcome, name, request, started)
                self._finished(outcome)
                continue
            _pool().submit(self._call_and_finish, outcome, name, request, started)
        return []

    def _slot_take(self, keep_going: Callable[[], bool]) -> bool:
        """Wait for room under the in-flight cap; False if told to stop.

        A freed place is taken at once: answers are recorded while waiting for pacing
        (``flush_if_due``), or here only when many are waiting or no place freed for a while.
        """
        while True:
            with self._cond:
                if self._in_flight < self._cap():
                    self._in_flight += 1
                    return True
                crowded = len(self._done) >= FLUSH_AT
                if not crowded:
                    crowded = not self._cond.wait(timeout=FLUSH_EVERY)  # no answer came back meanwhile
            if crowded:
                self.flush_if_due()
            if not keep_going():
                return False

    def _slot_return(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _call_and_finish(self, outcome: Outcome, name: str, request, started) -> None:
        try:
            _call(outcome, name, request, started)
        finally:
            self._finished(outcome)

    def _finished(self, outcome: Outcome) -> None:
        with self._cond:
            self._in_flight -= 1
            self._done.append(outcome)
            self._cond.notify_all()

    # --- recording -------------------------------------------------------------------------

    def flush_if_due(self, available: float = math.inf) -> None:
        """Write the answers that came back, if enough are waiting or the last write is old enough.

        ``available``: the seconds the caller has before its next hand-over; a write that would
        likely take longer waits, so recording never makes a request leave late.
        """
        with self._cond:
            if not self._done or available < 2 * self._flush_cost:
                return
            if len(self._done) < FLUSH_AT and time.monotonic() - self._flushed_at < FLUSH_EVERY:
                return
            batch, self._done = self._done, []
        self._flush(batch)

    def _flush(self, outcomes: list[Outcome], reread: Sequence[int] = ()) -> None:
        began = self._flushed_at = time.monotonic()
        try:
            self._record(outcomes, reread)
        finally:
            self._flush_cost += 0.2 * (time.monotonic() - began - self._flush_cost)

    def _record(self, outcomes: list[Outcome], reread: Sequence[int]) -> None:
        rows = []
        for outcome in outcomes:
            self._learn(outcome)
            row = row_skipped(outcome.message, outcome.skip) if outcome.skip else row_for(outcome)
            if row is not None:
                rows.append(row)
        moved = rows_write(rows)
        messages = {outcome.message.pk: outcome.message for outcome in outcomes}
        # Moved by someone else meanwhile (the reaper, a callback) or not this batch's: as stored.
        again = [pk for pk in messages if pk not in moved and messages[pk].status != MessageStatus.SENDING]
        for message in Message.objects.filter(pk__in=[*again, *reread]):
            messages[message.pk] = message
        early_callbacks_apply([o.message for o in outcomes if o.result is not None and o.message.pk in moved])
        if moved:
            transaction.on_commit(lambda: message_statuses_changed.send(sender=Message, message_ids=sorted(moved)))
        if self.on_recorded is not None and messages:
            self.on_recorded(list(messages.values()))

    def _learn(self, outcome: Outcome) -> None:
        """The in-flight cap follows the provider: its latency, and its refusals for concurrency."""
        if self.limit is None or outcome.skip:
            return
        if outcome.error is not None and outcome.error.throttled:
            with self._cond:
                in_flight = self._in_flight
            self.limit.throttled(in_flight + 1)
            return
        if outcome.result is not None:
            self.limit.answered()
            self.limit.gauge.observe(max(outcome.answered - outcome.started, 0.0))
            if self.sender_id and time.monotonic() - self._published_at >= PUBLISH_EVERY:
                self._published_at = time.monotonic()
                inflight.latency_publish(self.sender_id, self.limit.gauge)


def messages_send_batch(
    message_ids: Sequence[int],
    *,
    pace: Callable[..., Any] = lambda idle=None: True,
    keep_going: Callable[[], bool] = lambda: True,
    concurrency: int | None = None,
) -> BatchResult:
    """Send the pending messages among ``message_ids`` once each and wait for every answer.

    The one-batch form of ``SendPipeline``; the others are returned as they are. Stopped
    messages are put back to ``pending`` and listed in ``unsent``.
    """
    result = BatchResult()

    def recorded(messages: list[Message]) -> None:
        result.messages.update((message.pk, message) for message in messages)

    pipeline = SendPipeline(concurrency=concurrency, on_recorded=recorded)
    result.unsent = pipeline.send(message_ids, pace=pace, keep_going=keep_going)
    pipeline.drain()
    for message in Message.objects.filter(pk__in=[pk for pk in message_ids if pk not in result.messages]):
        result.messages[message.pk] = message
    return result


# --- Claim and intent ----------------------------------------------------------------------


def _call(outcome: Outcome, provider_name: str, request, sent: Callable[[], None] | None) -> None:
    """One provider call; ``sent`` (the pacing's mark) runs once the request has been written."""
    provider = get_provider(provider_name)
    outcome.started = time.time()
    try:
        outcome.result = provider.send(request, on_sent=sent)
    except ProviderError as exc:
        outcome.error = exc
    except Exception as exc:  # noqa: BLE001 - a bug in a client must not lose the batch: unknown outcome
        logger.exception("provider call for message %s raised", outcome.message.pk)
        outcome.error = ProviderError(ErrorKind.RETRYABLE, "", f"client error: {exc}", accepted_unknown=True)
    outcome.answered = time.time()
