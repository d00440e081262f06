"""A campaign's schedule in celery-beat: its cron tick and the periodic task that fires it."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

from django_celery_beat.models import ClockedSchedule, CrontabSchedule, PeriodicTask

from campaigns.models import (
    Campaign,
    CampaignStatus,
    ScheduleType,
)

LAUNCH_TASK = "campaigns.tasks.campaign_fire"


def crontab_fields(expression: str) -> dict[str, str]:
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"{expression!r} must have five fields: minute hour day-of-month month day-of-week")
    from celery.schedules import crontab

    fields = dict(zip(("minute", "hour", "day_of_month", "month_of_year", "day_of_week"), parts, strict=True))
    try:
        crontab(**fields)
    except ValueError as exc:
        raise ValueError(f"{expression!r} is not a valid cron expression: {exc}") from None
    return fields


# A worker's clock may run a little behind beat's: a firing this close before a tick is that tick's.
# Small against a minute, the shortest cron period: a firing 55 s late is still its own minute's.
CRON_TICK_LEEWAY = dt.timedelta(seconds=5)


def cron_tick(expression: str, timezone_name: str, now: dt.datetime) -> dt.datetime:
    """The tick of the cron ``expression`` (in ``timezone_name``) that a firing at ``now`` belongs to.

    The latest tick at or before ``now`` (plus CRON_TICK_LEEWAY), computed as celery-beat's crontab
    does. A firing redelivered long after its tick (a worker died between the launch's commit and
    the task's ack, and the broker gave the task out again) still names that tick, so it finds the
    run already made instead of starting a second one.
    """
    from celery.schedules import crontab

    schedule = crontab(**crontab_fields(expression))
    zone = zoneinfo.ZoneInfo(timezone_name or "UTC")
    latest = now + CRON_TICK_LEEWAY

    def following(moment: dt.datetime) -> dt.datetime:
        start, delta, _ = schedule.remaining_delta(moment, tz=zone)
        return start + delta

    # Beat fires at the tick; a redelivery comes within the broker's visibility timeout (an hour).
    for window in (dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(days=8), dt.timedelta(days=32)):
        tick = following(latest - window)
        if tick <= latest:
            break
    else:  # no tick in a month: not a firing of this schedule; the minute names it
        return now.replace(second=0, microsecond=0)
    for _ in range(1440):  # at most a tick a minute over a day's window
        after = following(tick)
        if not tick < after <= latest:
            break
        tick = after
    return tick.astimezone(dt.UTC)


def _periodic_task_name(campaign: Campaign) -> str:
    return f"campaign:{campaign.pk}"


def _wants_periodic_task(campaign: Campaign) -> bool:
    if campaign.schedule_type == ScheduleType.CRON:
        return campaign.status in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED)
    if campaign.schedule_type == ScheduleType.ONCE:
        # Paused before its time: keep the (disabled) task so resuming restores it.
        return campaign.status == CampaignStatus.SCHEDULED or (
            campaign.status == CampaignStatus.PAUSED and not campaign.runs.exists()
        )
    return False


def campaign_sync_schedule(campaign: Campaign) -> PeriodicTask | None:
    """Create, update or remove the campaign's PeriodicTask so beat matches the campaign.

    Scheduled (and, for recurring campaigns, running) campaigns have an enabled task;
    a paused one keeps it disabled; drafts and finished campaigns have none.
    """
    task = campaign.periodic_task
    if not _wants_periodic_task(campaign):
        if task is not None:
            Campaign.objects.filter(pk=campaign.pk).update(periodic_task=None)
            campaign.periodic_task = None
            task.delete()
        return None
    schedule: dict = {"clocked": None, "crontab": None, "interval": None, "solar": None}
    if campaign.schedule_type == ScheduleType.ONCE:
        schedule["clocked"], _ = ClockedSchedule.objects.get_or_create(clocked_time=campaign.send_at)
    else:
        schedule["crontab"], _ = CrontabSchedule.objects.get_or_create(
            **crontab_fields(campaign.cron), timezone=zoneinfo.ZoneInfo(campaign.cron_timezone or "UTC")
        )
    defaults = {
        **schedule,
        "task": LAUNCH_TASK,
        "kwargs": json.dumps({"campaign_id": campaign.pk}),
        "one_off": campaign.schedule_type == ScheduleType.ONCE,
        "enabled": campaign.status != CampaignStatus.PAUSED,
        "description": f"Launches campaign {campaign.name!r} (managed by the campaign; edit the campaign, not this)",
    }
    task, _ = PeriodicTask.objects.update_or_create(name=_periodic_task_name(campaign), defaults=defaults)
    if campaign.periodic_task_id != task.pk:
        Campaign.objects.filter(pk=campaign.pk).update(periodic_task=task)
        campaign.periodic_task = task
    return task
