"""Events as data: the per-contact history index, and the hourly retention purge.

``event_contact_occurred`` serves a contact's history newest first (``GET
/api/v1/contacts/{id}/events/``, the admin's list for a contact): the page is read from the index
in order, whatever the table's size. Built CONCURRENTLY, so writes go on while it builds on a
large table (hence a non-atomic migration). It is not declared on the model: the index is an
access path of the history selector, like the retention indexes of messaging 0005.
"""

from django.db import migrations

NAME = "campaigns: event retention purge"
TASK = "campaigns.event_retention_purge"
EVERY_SECONDS = 3600


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.update_or_create(name=NAME, defaults={"task": TASK, "interval": interval, "enabled": True})


def delete_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("campaigns", "0008_dispatch_upkeep_every_ten_seconds"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS event_contact_occurred "
            "ON campaigns_event (contact_id, occurred_at DESC, id DESC)",
            "DROP INDEX CONCURRENTLY IF EXISTS event_contact_occurred",
        ),
        migrations.RunPython(create_schedule, delete_schedule),
    ]
