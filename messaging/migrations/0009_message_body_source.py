"""A free-text message keeps its body as written: every send attempt renders it for the contact.

A constant default: PostgreSQL adds the column without rewriting the table.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0008_message_request_hash"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="body_source",
            field=models.TextField(
                blank=True,
                db_default="",
                default="",
                help_text="A free-text message's body as written, placeholders included; body holds it rendered for the contact from the first send on. Every attempt renders this, never an earlier rendering.",
            ),
        ),
    ]
