"""Events are stored first and matched by workers: a status, a pending queue index, unknown contacts
(the matchers' sweep is scheduled by config/periodic.py)."""

import django.db.models.deletion
from django.db import migrations, models


def existing_events_matched(apps, schema_editor):
    """Events stored before this were matched as they were recorded."""
    Event = apps.get_model("campaigns", "Event")
    Event.objects.update(status="matched", matched_at=models.F("received_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("audience", "0008_contacttopic_topic_without_db_constraint"),
        ("campaigns", "0009_event_history_index_retention"),
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
    ]
