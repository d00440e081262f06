"""The index of messages whose price is still to be fetched also holds messages still "sent": many never get
a delivery receipt, and their price is asked for after PRICE_FETCH_SENT_AFTER_SECONDS. Built CONCURRENTLY
before the narrower one is dropped, so the due query always has an index and the table keeps taking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("messaging", "0014_links"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="message",
            index=models.Index(
                condition=models.Q(
                    ("direction", "outbound"),
                    ("price__isnull", True),
                    ("price_error", ""),
                    ("provider_sid__isnull", False),
                    ("status__in", ("delivered", "read", "undelivered", "failed", "sent")),
                ),
                fields=["updated_at"],
                name="message_price_due_or_sent",
            ),
        ),
        RemoveIndexConcurrently(model_name="message", name="message_price_due"),
    ]
