"""Contact gets the permission of the one masking policy (config.privacy): see phones, names, e-mails whole."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("audience", "0012_phone_hashes_keyed")]

    operations = [
        migrations.AlterModelOptions(
            name="contact",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [("see_full_phone", "Can see full phone numbers, names and e-mail addresses")],
            },
        ),
    ]
