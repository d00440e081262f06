"""Checks staff see before a campaign goes out: said at save time, so a launch holds no surprise."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from campaigns.models import Campaign, CampaignKind, SkipReason
from campaigns.services.dry_run import campaign_dry_run


def campaign_variable_warning(campaign: Campaign) -> str | None:
    """A sentence when most of the campaign's audience lacks a value its template needs, else None.

    Triggered campaigns are not checked: their audience is whoever sends the event, each answer is
    checked then.
    """
    if campaign.kind == CampaignKind.TRIGGERED:
        return None
    try:
        result = campaign_dry_run(campaign, samples=0, with_cost=False)
    except ValidationError:
        return None
    missing = result["excluded"].get(SkipReason.MISSING_VARIABLE, 0)
    if not result["audience"] or missing * 2 <= result["audience"]:
        return None
    return (
        f"{missing} of the {result['audience']} contacts in this campaign's audience lack a value its "
        "template needs: they would be skipped. Give the template a fallback, or check the segment."
    )
