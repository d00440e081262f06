"""The dispatcher: one run's recipients, batch after batch, through one send pipeline.

A dispatcher (``RunDispatcher``, run by the ``campaigns.run_dispatch`` task) claims a batch
(``dispatch.recipients_claim``), hands it to the send pipeline paced by the sender's log
(``messaging.pacing``) under the in-flight cap (``messaging.services.inflight``), claims the next
batch as soon as that one is handed over, and settles recipients as their answers are recorded.
"""

from __future__ import annotations

import logging
import math
import time

from django.db.models import Min
from django.utils import timezone

from campaigns.models import CampaignRun, Recipient, RecipientState, RunStatus
from campaigns.services import dispatch, expiry
from messaging import pacing
from messaging.models import Message
from messaging.services import inflight
from messaging.services import send_batch as send_service_batch

logger = logging.getLogger(__name__)

STATUS_FRESH = 0.05  # seconds a read of the run's status is trusted before the next send
RETRY_POLL_MAX = 5.0  # seconds; short countdowns only (the Redis broker redelivers long ones)


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
    """The sender's pacer (``pacing.pacer``), stopping when the run does."""
    return pacing.pacer(sender_id, mps, watch.running)


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
        expiry.run_expire(run)
        sender = run.campaign.sender
        mps = min(run.mps, sender.effective_mps) if run.mps else sender.effective_mps
        claimed = dispatch.recipients_claim(run, dispatch.batch_size(mps))
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
            dispatch.recipients_release(self.run_id, [self.claims.pop(message_id) for message_id in unsent])
            # Given back because the run stopped, or because the batch was held up past its claim
            # window (the sender's pace shared with other sends, a slow machine): then carry on.
            return len(claimed) - len(unsent), 0.0 if _running(self.run_id) else None
        return len(claimed), 0.0

    def drain(self) -> None:
        if self.pipeline is not None:
            self.pipeline.drain()

    def close(self) -> None:
        """Wait for the requests still out, settle them, and complete the run if that was its last."""
        self.drain()
        if self.pipeline is not None:
            dispatch.run_complete_if_final(self.run_id)

    def _pipeline(self, sender_id: int, mps: int) -> send_service_batch.SendPipeline:
        if self.pipeline is None:
            limit = inflight.InFlightLimit(mps, inflight.latency_gauge(sender_id))
            self.pipeline = send_service_batch.SendPipeline(limit=limit, on_recorded=self._settle, sender_id=sender_id)
        return self.pipeline

    def _settle(self, messages: list[Message]) -> None:
        outcomes = []
        for message in messages:
            recipient_id = self.claims.pop(message.pk, None)
            if recipient_id is not None and (outcome := dispatch.recipient_outcome(message)) is not None:
                outcomes.append((recipient_id, outcome))
        dispatch.recipients_settle(self.run_id, outcomes)


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
    waiting = Recipient.objects.filter(run=run, state=RecipientState.PENDING).aggregate(
        at=Min("message__next_attempt_at")
    )["at"]
    if waiting is not None:
        seconds = (waiting - timezone.now()).total_seconds()
        return min(max(seconds, 0.5), RETRY_POLL_MAX)
    dispatch.run_complete_if_final(run.pk)
    return None
