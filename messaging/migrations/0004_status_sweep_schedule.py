"""Beat schedule of the status-event sweep, created or updated by name so a fresh deploy has it.

The schedule itself is kept by config/periodic.py, synced after every migrate.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0003_send_beat_schedules"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
