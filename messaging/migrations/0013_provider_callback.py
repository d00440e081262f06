"""The provider's callbacks are called so; "event" is the customer's word (campaigns.Event).

A rename: the rows, their indexes and constraints stay (PostgreSQL renames the table in place).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0012_message_price_due_index"),
    ]

    operations = [
        migrations.RenameModel(old_name="MessageEvent", new_name="ProviderCallback"),
        migrations.AlterField(
            model_name="providercallback",
            name="message",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="callbacks",
                to="messaging.message",
            ),
        ),
    ]
