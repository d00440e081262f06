"""ConsentEvent.phone_hash: index only the events without a contact.

A contact's history is read through contact_id; the hash is the only way to an
erased person's events (and to any event without a contact), so only those
rows need it. An import writes an event with a contact for every new contact,
and the full hash index was about a quarter of that write.

Built CONCURRENTLY before the old index goes, so the events table keeps taking
writes while the migration runs (hence a non-atomic migration).
"""

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("audience", "0009_contact_opted_out_index_consentevent_hash_index"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="consentevent",
            index=django.contrib.postgres.indexes.HashIndex(
                condition=models.Q(("contact__isnull", True)),
                fields=["phone_hash"],
                name="consentevent_orphan_phone_hash",
            ),
        ),
        RemoveIndexConcurrently(
            model_name="consentevent",
            name="consentevent_phone_hash",
        ),
    ]
