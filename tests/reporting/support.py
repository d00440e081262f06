"""Builders shared by the reporting tests: a campaign, its runs, recipients and their messages.

Rows are inserted directly with the timestamps a test needs; status changes that matter to the
counters go through messaging's own status service.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.contenttypes.models import ContentType
from django.db.models import Count
from django.utils import timezone

from audience.consent_chain import consent_event_record
from audience.models import ConsentEvent, Contact
from campaigns.models import Campaign, CampaignRun, Recipient, RecipientState
from messaging.models import Direction, Message, MessageStatus
from tests.factories import CampaignFactory, ContactFactory

_sids = itertools.count(1)

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.get_current_timezone())


def make_campaign(name: str = "Spring sale", **kwargs) -> Campaign:
    return CampaignFactory(name=name, **kwargs)


def make_run(campaign: Campaign, *, at: datetime = T0, status: str = "completed", **counts) -> CampaignRun:
    run = CampaignRun.objects.create(campaign=campaign, scheduled_for=at, status=status, mps=10, **counts)
    CampaignRun.objects.filter(pk=run.pk).update(started_at=at)
    run.refresh_from_db()
    return run


def make_message(
    *,
    contact: Contact | None = None,
    sender=None,
    status: str = MessageStatus.QUEUED,
    direction: str = Direction.OUTBOUND,
    channel: str = "sms",
    created_at: datetime = T0,
    sid: str | None = None,
    **fields,
) -> Message:
    contact = contact or ContactFactory()
    phone_field = "to_address" if direction == Direction.OUTBOUND else "from_address"
    fields.setdefault(phone_field, contact.phone)
    if sid is None and status not in (MessageStatus.PENDING, MessageStatus.SKIPPED):
        sid = f"SM{next(_sids):032d}"
    message = Message.objects.create(
        direction=direction,
        contact=contact,
        sender=sender,
        channel=channel,
        status=status,
        provider_sid=sid,
        **fields,
    )
    Message.objects.filter(pk=message.pk).update(created_at=created_at)
    message.refresh_from_db()
    return message


def add_recipient(
    run: CampaignRun,
    *,
    contact: Contact | None = None,
    state: str = RecipientState.SENT,
    reason: str = "",
    detail: str = "",
    message_status: str | None = MessageStatus.QUEUED,
    sent: datetime | None = None,
    delivered_after: float | None = None,
    read_after: float | None = None,
    failed_after: float | None = None,
    error_code: str = "",
    price: str | None = None,
    **message_fields,
) -> Recipient:
    """A recipient, and unless message_status is None its message with the given timeline."""
    contact = contact or ContactFactory()
    message = None
    if message_status is not None:
        times = {}
        if sent is not None:
            times["sent_at"] = sent
            if delivered_after is not None:
                times["delivered_at"] = sent + timedelta(seconds=delivered_after)
            if read_after is not None:
                times["read_at"] = sent + timedelta(seconds=read_after)
            if failed_after is not None:
                times["failed_at"] = sent + timedelta(seconds=failed_after)
        message = make_message(
            contact=contact,
            sender=run.campaign.sender,
            status=message_status,
            created_at=sent or run.started_at,
            error_code=error_code,
            price=Decimal(price) if price is not None else None,
            price_unit="USD" if price is not None else "",
            **times,
            **message_fields,
        )
    recipient = Recipient.objects.create(
        run=run, contact=contact, state=state, reason=reason, detail=detail, message=message, sent_at=sent
    )
    if message is not None:  # as the dispatcher does: the message's source is its recipient
        Message.objects.filter(pk=message.pk).update(
            source_type=ContentType.objects.get_for_model(Recipient), source_id=recipient.pk
        )
    return recipient


def run_counters_fill(*runs: CampaignRun) -> None:
    """Set each run's recipient counters from its recipients, as the snapshot and the dispatcher keep them."""
    for run in runs:
        recipients = Recipient.objects.filter(run=run)
        states = dict(recipients.values("state").annotate(n=Count("id")).values_list("state", "n"))
        reasons = dict(
            recipients.filter(state=RecipientState.SKIPPED)
            .values("reason")
            .annotate(n=Count("id"))
            .values_list("reason", "n")
        )
        CampaignRun.objects.filter(pk=run.pk).update(
            total=sum(states.values()),
            skipped_by_reason=reasons,
            **{s: states.get(s, 0) for s in RecipientState.values},
        )
        run.refresh_from_db()


def opt_out_event(contact: Contact, at: datetime) -> ConsentEvent:
    return consent_event_record(
        contact=contact,
        hashed_phone="x" * 64,
        from_status="opted_in",
        to_status="opted_out",
        source="keyword",
        created_at=at,
    )
