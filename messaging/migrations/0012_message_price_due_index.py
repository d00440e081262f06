"""The index of messages whose price is still to be fetched, built CONCURRENTLY: the message table keeps
taking writes while it is built (a big table would otherwise be locked for the whole build)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("messaging", "0011_message_price_fetch_pricetable"),
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
                    ("status__in", ("delivered", "read", "undelivered", "failed")),
                ),
                fields=["updated_at"],
                name="message_price_due",
            ),
        ),
    ]
