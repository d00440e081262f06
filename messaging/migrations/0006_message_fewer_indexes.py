"""Four indexes fewer on messaging_message, each written on every status change of every message.

contact_id and source_type_id alone are covered by (contact, created_at) and (source_type,
source_id); the unique provider_sid and idempotency_key keep their unique index (renamed, not
rebuilt) and lose the varchar_pattern_ops copy Django adds for LIKE, which nothing uses.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audience", "0008_contacttopic_topic_without_db_constraint"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("messaging", "0005_retention_purge"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql="""
                    DROP INDEX IF EXISTS messaging_message_contact_id_20c3f93a;
                    DROP INDEX IF EXISTS messaging_message_source_type_id_c8ff62ba;
                    DROP INDEX IF EXISTS messaging_message_provider_sid_526d27ee_like;
                    DROP INDEX IF EXISTS messaging_message_idempotency_key_0ee4d6bf_like;
                    ALTER TABLE messaging_message
                        RENAME CONSTRAINT messaging_message_provider_sid_key TO message_provider_sid_unique;
                    ALTER TABLE messaging_message
                        RENAME CONSTRAINT messaging_message_idempotency_key_key TO message_idempotency_key_unique;
                    """,
                    reverse_sql="""
                    ALTER TABLE messaging_message
                        RENAME CONSTRAINT message_provider_sid_unique TO messaging_message_provider_sid_key;
                    ALTER TABLE messaging_message
                        RENAME CONSTRAINT message_idempotency_key_unique TO messaging_message_idempotency_key_key;
                    CREATE INDEX messaging_message_contact_id_20c3f93a ON messaging_message (contact_id);
                    CREATE INDEX messaging_message_source_type_id_c8ff62ba ON messaging_message (source_type_id);
                    CREATE INDEX messaging_message_provider_sid_526d27ee_like
                        ON messaging_message (provider_sid varchar_pattern_ops);
                    CREATE INDEX messaging_message_idempotency_key_0ee4d6bf_like
                        ON messaging_message (idempotency_key varchar_pattern_ops);
                    """,
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="contact",
                    field=models.ForeignKey(
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="messages",
                        to="audience.contact",
                    ),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="idempotency_key",
                    field=models.CharField(blank=True, max_length=255, null=True),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="provider_sid",
                    field=models.CharField(blank=True, max_length=64, null=True),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="source_type",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        to="contenttypes.contenttype",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="message",
                    constraint=models.UniqueConstraint(fields=("provider_sid",), name="message_provider_sid_unique"),
                ),
                migrations.AddConstraint(
                    model_name="message",
                    constraint=models.UniqueConstraint(
                        fields=("idempotency_key",), name="message_idempotency_key_unique"
                    ),
                ),
            ],
        ),
    ]
