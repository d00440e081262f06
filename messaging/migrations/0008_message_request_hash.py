"""A message created with an Idempotency-Key keeps the hash of its request: a replay with another body is a 422.

A constant default: PostgreSQL adds the column without rewriting the table.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0007_message_status_times_earliest_evidence"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="request_hash",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="SHA-256 of the request that created it with an idempotency key: a replay must match it.",
                max_length=64,
            ),
        ),
    ]
