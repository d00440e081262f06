import logging

from celery import shared_task
from django.utils import timezone

from campaigns.models import Campaign, ScheduleType
from campaigns.services import CampaignError, campaign_launch

logger = logging.getLogger(__name__)


@shared_task(name="campaigns.tasks.campaign_fire", ignore_result=True)
def campaign_fire(campaign_id: int) -> int | None:
    """Fired by celery-beat at a campaign's scheduled time; safe to run twice (one run per tick)."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        logger.warning("campaign %s fired but no longer exists", campaign_id)
        return None
    now = timezone.now()
    if campaign.schedule_type == ScheduleType.ONCE and campaign.send_at:
        scheduled_for = campaign.send_at
    else:
        scheduled_for = now.replace(second=0, microsecond=0)
    try:
        run = campaign_launch(campaign, scheduled_for=scheduled_for, actor="celery-beat", now=now)
    except CampaignError as exc:
        logger.info("campaign %s not launched: %s", campaign_id, "; ".join(exc.messages))
        return None
    return run.pk
