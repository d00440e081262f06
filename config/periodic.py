"""Every periodic task the platform runs, in one place, kept in celery-beat's tables by name.

``periodic_tasks_sync`` runs after every ``migrate`` (and ``flush``): each entry is created, or
updated to its task and interval, so a fresh database and an upgraded one end in the same state.
Campaign schedules (``campaign:<id>``) belong to the campaign service and are left alone; an entry
taken out of this list goes into ``RETIRED`` so the sync deletes it.
"""

from __future__ import annotations

from typing import NamedTuple

from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks


class Periodic(NamedTuple):
    name: str
    task: str
    every_seconds: int


SCHEDULE: tuple[Periodic, ...] = (
    Periodic("audience: import errors purge", "audience.import_errors_purge", 3600),
    Periodic("audience: resume stalled imports", "audience.import_jobs_resume", 60),
    Periodic("messaging: apply pending status callbacks", "messaging.status_callbacks_sweep", 30),
    Periodic("messaging: reconcile stale sends", "messaging.messages_reconcile_stale", 60),
    Periodic("messaging: retention purge", "messaging.retention_purge", 3600),
    Periodic("messaging: send due retries", "messaging.messages_send_due", 30),
    Periodic("messaging: fetch message prices", "messaging.prices_fetch", 30),
    Periodic("messaging: record link clicks", "messaging.clicks_drain", 2),
    Periodic("messaging: expire tracked links", "messaging.links_expire", 3600),
    Periodic("campaigns: dispatch upkeep", "campaigns.dispatch_upkeep", 10),
    Periodic("campaigns: reap stale recipient claims", "campaigns.recipients_reap", 60),
    Periodic("campaigns: release held recipients", "campaigns.held_release", 30),
    Periodic("campaigns: event retention purge", "campaigns.event_retention_purge", 3600),
    Periodic("campaigns: match stored events", "campaigns.events_sweep", 10),
    Periodic("campaigns: attribute conversions", "campaigns.conversions_attribute", 10),
    Periodic("campaigns: pick test winners", "campaigns.winners_pick", 60),
    Periodic("reporting: evaluate alerts", "reporting.alerts_evaluate", 30),
    Periodic("reporting: refresh monitoring probes", "reporting.monitoring_refresh", 10),
    Periodic("reporting: sync message counters", "reporting.counters_sweep", 30),
)

RETIRED: tuple[str, ...] = ("messaging: apply pending status events",)


def periodic_tasks_sync(using: str = "default") -> int:
    """Make celery-beat's tables hold ``SCHEDULE``; the number of entries created or changed."""
    changed = 0
    for entry in SCHEDULE:
        interval, _ = IntervalSchedule.objects.using(using).get_or_create(
            every=entry.every_seconds, period=IntervalSchedule.SECONDS
        )
        task = PeriodicTask.objects.using(using).filter(name=entry.name).first()
        if task is None:
            PeriodicTask.objects.using(using).create(name=entry.name, task=entry.task, interval=interval)
            changed += 1
        elif (task.task, task.interval_id, task.crontab_id) != (entry.task, interval.pk, None):
            task.task, task.interval, task.crontab = entry.task, interval, None
            task.save(using=using)  # the model's save tells a running beat to reload
            changed += 1
    changed += PeriodicTask.objects.using(using).filter(name__in=RETIRED).delete()[0]
    if changed:
        PeriodicTasks.update_changed()
    return changed
