"""A run's validity: past it, waiting recipients are skipped 'expired' instead of sent late."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.models import CampaignKind, CampaignRun, Recipient, RecipientState, RunStatus, SkipReason
from campaigns.services.dispatch import run_counters_move, run_status_locked
from messaging.models import Message, MessageStatus


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
    earlier, as the eligibility rule counts it. Without this, a triggered campaign
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
        if run_status_locked(run.pk) not in (RunStatus.RUNNING, RunStatus.PAUSED):
            return 0
        waiting = Recipient.objects.filter(stale, run=run, state__in=[RecipientState.PENDING, RecipientState.HELD])
        held = waiting.filter(state=RecipientState.HELD).count()
        moved = waiting.update(state=RecipientState.SKIPPED, reason=SkipReason.EXPIRED, release_at=None)
        run_counters_move(
            run.pk, {"pending": -(moved - held), "held": -held, "skipped": moved}, {SkipReason.EXPIRED: moved}
        )
        if moved:
            _messages_drop_expired(run.pk)
    return moved


def _messages_drop_expired(run_id: int) -> None:
    Message.objects.filter(
        recipient__run_id=run_id, recipient__state=RecipientState.SKIPPED, status=MessageStatus.PENDING
    ).update(status=MessageStatus.SKIPPED, skip_reason="validity period expired", skipped_at=timezone.now())
