"""Prices fetched after the final status (tries, next try, give-up reason) and the price table estimates read.

The new message columns have constant database defaults: added without rewriting the table."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0010_message_outcome_unknown"),
    ]

    operations = [
        migrations.CreateModel(
            name="PriceTable",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "country",
                    models.CharField(help_text="ISO 3166 code of the destination, e.g. KE, GB, US.", max_length=2),
                ),
                ("channel", models.CharField(choices=[("whatsapp", "WhatsApp"), ("sms", "SMS")], max_length=16)),
                (
                    "price",
                    models.DecimalField(
                        decimal_places=5, help_text="Per SMS segment, or per WhatsApp message.", max_digits=10
                    ),
                ),
                ("currency", models.CharField(help_text="ISO 4217, upper case, e.g. USD.", max_length=3)),
                (
                    "source",
                    models.CharField(
                        choices=[
                            ("provider", "Provider's pricing API"),
                            ("csv", "CSV import"),
                            ("manual", "Entered by hand"),
                        ],
                        default="manual",
                        max_length=16,
                    ),
                ),
                ("refreshed_at", models.DateTimeField()),
            ],
            options={
                "verbose_name": "price",
                "ordering": ["country", "channel"],
            },
        ),
        migrations.AddField(
            model_name="message",
            name="price_attempts",
            field=models.SmallIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="message",
            name="price_error",
            field=models.CharField(blank=True, db_default="", default="", max_length=200),
        ),
        migrations.AddField(
            model_name="message",
            name="price_next_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddConstraint(
            model_name="pricetable",
            constraint=models.UniqueConstraint(fields=("country", "channel"), name="price_country_channel_unique"),
        ),
        migrations.AddConstraint(
            model_name="pricetable",
            constraint=models.CheckConstraint(condition=models.Q(("price__gte", 0)), name="price_not_negative"),
        ),
        migrations.AddConstraint(
            model_name="pricetable",
            constraint=models.CheckConstraint(
                condition=models.Q(("channel__in", ["whatsapp", "sms"])), name="price_channel_valid"
            ),
        ),
    ]
