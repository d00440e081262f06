"""Delivery upkeep (celery-beat): held recipients released, lost claims reaped, quiet runs restarted.

Claims and unknown outcomes follow their Message (``recipients_reap``); a run whose dispatchers
all went quiet is started again (``runs_kick``); runs whose recipients are all final complete.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.models import CampaignRun, Recipient, RecipientState, RunStatus
from campaigns.services.dispatch import (
    dispatch_start,
    messages_drop,
    recipient_outcome,
    recipients_settle,
    run_complete_if_final,
    run_counters_move,
    run_status_locked,
)
from campaigns.services.expiry import run_expire
from messaging.models import MessageStatus
from messaging.services import outcomes as send_outcomes

# A claim older than this whose Message was never sent lost its worker: queue it again.
# The Message's own claim still guards against a double send if the worker was only slow.
STALE_CLAIM_AFTER = timedelta(seconds=120)
ACTIVE_RUN_STATUSES = (RunStatus.RUNNING, RunStatus.PAUSED)


def _active_runs():
    return CampaignRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED]).select_related("campaign")


def held_release(now: datetime | None = None) -> int:
    """Held recipients whose quiet hours ended become pending (or expired); returns how many moved."""
    now = now or timezone.now()
    moved = 0
    for run in _active_runs():
        moved += run_expire(run, now)
        with transaction.atomic():
            status = run_status_locked(run.pk)
            if status not in (RunStatus.RUNNING, RunStatus.PAUSED):
                continue
            released = Recipient.objects.filter(run=run, state=RecipientState.HELD, release_at__lte=now).update(
                state=RecipientState.PENDING, release_at=None
            )
            run_counters_move(run.pk, {"held": -released, "pending": released})
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
        due = Q(state=RecipientState.SENDING, claimed_at__lt=now - timedelta(seconds=30))
        moved_on = Q(state=RecipientState.UNKNOWN) & ~Q(message__status=MessageStatus.UNKNOWN)
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
        outcome = (RecipientState.PENDING, "", "") if message is None else recipient_outcome(message)
        if outcome is None or outcome[0] == recipient.state:
            continue  # at the provider's or unknown: the messaging reaper asks the provider first
        if (
            patient
            and outcome[0] == RecipientState.PENDING
            and recipient.state == RecipientState.SENDING
            and message is not None
        ):
            if recipient.claimed_at > now - STALE_CLAIM_AFTER:
                continue  # not sent yet, and its dispatcher may still be alive
        moved += _recipient_follow(run_id, recipient, outcome, now)
    return moved


def _recipient_follow(run_id: int, recipient: Recipient, outcome: tuple[str, str, str], now: datetime) -> int:
    with transaction.atomic():
        status = run_status_locked(run_id)
        if outcome[0] == RecipientState.PENDING and status not in ACTIVE_RUN_STATUSES:
            if status == RunStatus.CANCELLED and recipient.state == RecipientState.SENDING:
                # Never sent, and the campaign was cancelled: skipped 'cancelled' (recipients_settle).
                moved = recipients_settle(run_id, [(recipient.pk, outcome)], now)
                messages_drop([recipient.pk])
                return moved
            # Never created at the provider, and its run is over: nothing is sent after a run's end.
            if recipient.message_id and not send_outcomes.message_fail_unsent(recipient.message_id):
                return 0  # the message moved meanwhile: the next pass follows it
            outcome = (RecipientState.FAILED, "unsent", send_outcomes.UNSENT_RUN_ENDED)
        return recipients_settle(run_id, [(recipient.pk, outcome)], now, from_state=recipient.state)


def runs_kick() -> int:
    """Start the missing dispatchers of running runs with pending recipients (a dead one's place
    frees itself: ``dispatch.dispatch_start``); returns how many runs were looked at."""
    ids = list(CampaignRun.objects.filter(status=RunStatus.RUNNING, pending__gt=0).values_list("pk", flat=True))
    for run_id in ids:
        dispatch_start(run_id)
    return len(ids)


def runs_complete() -> int:
    """Complete running runs whose recipients are all final."""
    ids = list(CampaignRun.objects.filter(status=RunStatus.RUNNING).values_list("pk", flat=True))
    return sum(run_complete_if_final(run_id) for run_id in ids)
