"""Retention: the hourly purge of import row problems past RETENTION_IMPORT_ERRORS_DAYS.

The schedule itself is kept by config/periodic.py, synced after every migrate.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("audience", "0004_contacts_lighter_writes"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
