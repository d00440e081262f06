"""Events are stored first and matched by workers: a status, a pending queue index, unknown contacts."""

import django.db.models.deletion
from django.db import migrations, models

SWEEP = ("campaigns: match stored events", "campaigns.events_sweep", 10)


def existing_events_matched(apps, schema_editor):
    """Events stored before this were matched as they were recorded."""
    Event = apps.get_model("campaigns", "Event")
    Event.objects.update(status="matched", matched_at=models.F("received_at"))


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    name, task, seconds = SWEEP
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
    PeriodicTask.objects.update_or_create(name=name, defaults={"task": task, "interval": interval, "enabled": True})


def delete_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP[0]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("audience", "0008_contacttopic_topic_without_db_constraint"),
        ("campaigns", "0008_dispatch_upkeep_every_ten_seconds"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="event",
            name="contact_phone_hash",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="event",
            name="matched_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="event",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Stored, not matched yet"),
                    ("matched", "Matched"),
                    ("unknown_contact", "Unknown contact"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="contact",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="events",
                to="audience.contact",
            ),
        ),
        migrations.RunPython(existing_events_matched, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(condition=models.Q(("status", "pending")), fields=["id"], name="event_pending"),
        ),
        migrations.RunPython(create_schedule, delete_schedule),
    ]
