"""Beat schedules of the delivery engine, created or updated by name so a fresh deploy has them.

The schedule itself is kept by config/periodic.py, synced after every migrate.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_dispatch_fields"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
