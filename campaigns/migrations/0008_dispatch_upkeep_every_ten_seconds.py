"""Dispatch upkeep every 10 s: a dead dispatcher's place frees itself in 15 s, and is filled at the next upkeep."""

from django.db import migrations

NAME = "campaigns: dispatch upkeep"


def every(seconds):
    def apply(apps, schema_editor):
        IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.filter(name=NAME).update(interval=interval)

    return apply


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0007_recipient_outcome_unknown"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(every(10), every(30))]
