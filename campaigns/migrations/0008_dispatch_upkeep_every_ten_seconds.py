"""Dispatch upkeep every 10 s: a dead dispatcher's place frees itself in 15 s, and is filled at the next upkeep.

The schedule itself is kept by config/periodic.py, synced after every migrate.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0007_recipient_outcome_unknown"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
