"""The permission to see full phones moves from reporting to audience: one masking policy for every door.

Whoever held ``reporting.see_full_phone`` (a group or a user) is given ``audience.see_full_phone``,
then the old permission goes. The new one is created here if post_migrate has not made it yet.
"""

from django.db import migrations

OLD = ("reporting", "messagestatuscounter", "see_full_phone")
NEW = ("audience", "contact", "see_full_phone")
NEW_NAME = "Can see full phone numbers, names and e-mail addresses"
OLD_NAME = "Can see full phone numbers in reports and monitoring"


def _permission(apps, app_label, model, codename, name, create):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    if not create:
        return Permission.objects.filter(
            content_type__app_label=app_label, content_type__model=model, codename=codename
        ).first()
    content_type, _ = ContentType.objects.get_or_create(app_label=app_label, model=model)
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=codename, defaults={"name": name}
    )
    return permission


def _move(apps, source, target, target_name):
    old = _permission(apps, *source, "", create=False)
    if old is None:
        return
    new = _permission(apps, *target, target_name, create=True)
    for group in old.group_set.all():
        group.permissions.add(new)
    for user in old.user_set.all():
        user.user_permissions.add(new)
    old.delete()


def forwards(apps, schema_editor):
    _move(apps, OLD, NEW, NEW_NAME)


def backwards(apps, schema_editor):
    _move(apps, NEW, OLD, OLD_NAME)


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0008_counter_status_outcome_unknown"),
        ("audience", "0013_contact_see_full_phone_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
        migrations.AlterModelOptions(name="messagestatuscounter", options={}),
    ]
