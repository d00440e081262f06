from django import template

from campaigns.models import CampaignRun, RunStatus

register = template.Library()


@register.simple_tag
def runs_sending_now(limit: int = 10) -> list[CampaignRun]:
    """The runs sending now, newest first: the first thing the back office's home page shows."""
    return list(
        CampaignRun.objects.filter(status=RunStatus.RUNNING).select_related("campaign").order_by("-started_at")[:limit]
    )
