"""One alert or recovery as recorded and sent is an AlertNotice; "event" is the customer's word (campaigns.Event).

A rename: the rows, their indexes and constraints stay (PostgreSQL renames the table in place).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0012_arm_conversion_counters"),
    ]

    operations = [
        migrations.RenameModel(old_name="AlertEvent", new_name="AlertNotice"),
        migrations.AlterField(
            model_name="alertnotice",
            name="rule",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="notices",
                to="reporting.alertrule",
            ),
        ),
    ]
