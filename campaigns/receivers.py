"""Receivers of the signals messaging sends up (messaging never imports campaigns)."""

from __future__ import annotations

from campaigns.models import Campaign, CampaignKind, CampaignStatus
from campaigns.services import events
from campaigns.services.launch_checks import campaign_variable_warning


def on_inbound_message_received(sender, message_id: int, keyword: str | None = None, **kwargs) -> None:
    """An inbound message committed: fire the triggered campaign whose keyword it is, if any."""
    events.keyword_trigger(message_id, keyword)


def on_template_saved(sender, template, **kwargs) -> list[str]:
    """A template staff just saved: warn for each live campaign most of whose audience lacks a variable."""
    warnings = []
    live = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED)
    campaigns = Campaign.objects.filter(template=template, status__in=live).exclude(kind=CampaignKind.TRIGGERED)
    for campaign in campaigns.order_by("pk")[:20]:
        warning = campaign_variable_warning(campaign)
        if warning:
            warnings.append(f"Campaign “{campaign.name}”: {warning}")
    return warnings
