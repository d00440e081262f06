"""Background imports left behind (a worker died, a task message was lost) are queued again every minute.

The schedule itself is kept by config/periodic.py, synced after every migrate.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("audience", "0010_consentevent_hash_index_only_without_contact"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
