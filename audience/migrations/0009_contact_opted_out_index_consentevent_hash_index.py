"""Cheaper indexes for bulk imports, built without blocking writes.

- ConsentEvent.phone_hash: a hash index instead of a B-tree. It is only ever
  looked up by equality (a phone's consent history after erasure); the B-tree's
  64-character random keys made it the costliest index an import wrote.
- Contact: the B-tree over consent_status (two values; nearly every imported
  contact is opted in) becomes a partial index of opted-out contacts, newest
  first, which is what the opted-out filters read.

The new indexes are built CONCURRENTLY before the old ones go, so a large table
keeps taking writes while the migration runs (hence a non-atomic migration).
"""

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("audience", "0008_contacttopic_topic_without_db_constraint"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="consentevent",
            index=django.contrib.postgres.indexes.HashIndex(fields=["phone_hash"], name="consentevent_phone_hash"),
        ),
        AddIndexConcurrently(
            model_name="contact",
            index=models.Index(
                condition=models.Q(("consent_status", "opted_out")),
                fields=["-created_at"],
                name="contact_opted_out_idx",
            ),
        ),
        RemoveIndexConcurrently(
            model_name="contact",
            name="contact_consent_idx",
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="phone_hash",
            field=models.CharField(max_length=64),
        ),
    ]
