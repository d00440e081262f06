"""Beat schedules of the send service, created or updated by name so a fresh deploy has them.

The schedule itself is kept by config/periodic.py, synced after every migrate.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0002_message_render_context"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
