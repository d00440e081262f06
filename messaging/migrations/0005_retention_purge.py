"""Retention: partial indexes over the rows that still hold personal content, and the hourly purge (scheduled by config/periodic.py).

The indexes hold only rows the purge still has to clear, so each batch finds its rows at once
however many purged rows lie before them (messaging.retention).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0004_status_sweep_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS message_event_payload_kept ON messaging_messageevent (received_at) "
            "WHERE payload <> '{}'::jsonb",
            "DROP INDEX IF EXISTS message_event_payload_kept",
        ),
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS message_inbound_body_kept ON messaging_message (created_at) "
            "WHERE direction = 'inbound' AND (body <> '' OR media <> '[]'::jsonb)",
            "DROP INDEX IF EXISTS message_inbound_body_kept",
        ),
    ]
