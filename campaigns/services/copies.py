"""Copies of a campaign: a duplicate to edit, and a send test to a staff member's own number."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from campaigns.models import (
    CAMPAIGN_SETTINGS,
    Campaign,
    CampaignAction,
    CampaignStatus,
    ScheduleType,
)
from campaigns.services.lifecycle import audit_actor
from config.privacy import phone_mask
from messaging.services.sample_send import SampleSent, sample_message_send

# What a duplicate copies: every setting staff can edit, under a new name.
DUPLICATED_FIELDS = CAMPAIGN_SETTINGS


@transaction.atomic
def campaign_duplicate(campaign: Campaign, *, actor=None) -> Campaign:
    """A new draft with the campaign's settings, named "<name> (copy)" (or copy 2, 3, ...)."""
    base = f"{campaign.name[:190]} (copy"
    taken = set(Campaign.objects.filter(name__startswith=base).values_list("name", flat=True))
    name = next(
        candidate
        for candidate in (f"{base})", *(f"{base} {n})" for n in range(2, len(taken) + 3)))
        if candidate not in taken
    )
    fields = {field: getattr(campaign, field) for field in DUPLICATED_FIELDS}
    if fields["schedule_type"] == ScheduleType.ONCE and fields["send_at"] and fields["send_at"] <= timezone.now():
        fields.update(schedule_type=ScheduleType.NOW, send_at=None)  # its moment has passed: staff choose again
    duplicate = Campaign(name=name, status=CampaignStatus.DRAFT, **fields)
    if actor is not None and not isinstance(actor, str):
        duplicate.created_by = actor
    duplicate.save()
    for variant in campaign.variants.all():  # the experiment's arms come along, as new variants
        variant.pk, variant.campaign = None, duplicate
        variant.save()
    CampaignAction.objects.create(
        campaign=duplicate,
        action="create",
        to_status=duplicate.status,
        actor=audit_actor(actor),
        detail={"duplicate_of": campaign.pk},
    )
    return duplicate


def campaign_test_send(campaign: Campaign, *, contact, to: str, actor=None) -> SampleSent:
    """Send what ``contact`` would get from this campaign to the number ``to``, marked as a test on the
    campaign's actions and counted nowhere else. Raises ValidationError naming the field."""
    sent = sample_message_send(template=campaign.template, contact=contact, sender=campaign.sender, to=to)
    CampaignAction.objects.create(
        campaign=campaign,
        action="test_send",
        from_status=campaign.status,
        to_status=campaign.status,
        actor=audit_actor(actor),
        detail={"contact": contact.pk, "to": phone_mask(sent.to), "sid": sent.provider_sid},
    )
    return sent
