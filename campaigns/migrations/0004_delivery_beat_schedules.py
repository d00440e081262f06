"""Beat schedules of the delivery engine, created or updated by name so a fresh deploy has them."""

from django.db import migrations

SCHEDULES = {
    "campaigns: release held recipients": ("campaigns.release_held", 30),
    "campaigns: reap stale recipient claims": ("campaigns.reap_stale_claims", 60),
    "campaigns: dispatch upkeep": ("campaigns.dispatch_upkeep", 30),
}


def create_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, (task, seconds) in SCHEDULES.items():
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.update_or_create(name=name, defaults={"task": task, "interval": interval, "enabled": True})


def delete_schedules(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=SCHEDULES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_dispatch_fields"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, delete_schedules)]
