"""The periodic tasks are kept in celery-beat's tables from one registry (config/periodic.py)."""

from __future__ import annotations

import pytest
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from config.celery import app
from config.periodic import SCHEDULE, periodic_tasks_sync

pytestmark = pytest.mark.django_db


def test_every_entry_names_a_task_the_workers_know():
    app.loader.import_default_modules()
    assert {entry.task for entry in SCHEDULE} <= set(app.tasks)
    assert len({entry.name for entry in SCHEDULE}) == len(SCHEDULE)


def test_a_migrated_database_holds_the_schedule():
    stored = {task.name: (task.task, task.interval.every, task.enabled) for task in PeriodicTask.objects.all()}
    for entry in SCHEDULE:
        assert stored[entry.name] == (entry.task, entry.every_seconds, True)


def test_sync_puts_back_what_was_changed_or_deleted_and_leaves_campaign_schedules_alone():
    hourly, _ = IntervalSchedule.objects.get_or_create(every=3600, period="seconds")
    upkeep = SCHEDULE[0]
    PeriodicTask.objects.filter(name=upkeep.name).update(interval=hourly, task="wrong.task")
    PeriodicTask.objects.filter(name=SCHEDULE[1].name).delete()
    crontab = CrontabSchedule.objects.create(minute="0", hour="9")
    PeriodicTask.objects.create(name="campaign:1", task="campaigns.tasks.campaign_fire", crontab=crontab)

    assert periodic_tasks_sync() == 2
    assert periodic_tasks_sync() == 0  # twice is once

    fixed = PeriodicTask.objects.get(name=upkeep.name)
    assert (fixed.task, fixed.interval.every) == (upkeep.task, upkeep.every_seconds)
    assert PeriodicTask.objects.filter(name=SCHEDULE[1].name).exists()
    assert PeriodicTask.objects.get(name="campaign:1").crontab_id == crontab.pk
