"""The two roles of the back office and the API permission that enforces them.

Staff run the back office and may write; Analysts only read (reporting pages and
the read-only API). Superusers count as Staff. The groups are created by the
audience app's data migration and their model permissions kept in step by
``sync_role_permissions`` after every migrate.
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

STAFF = "Staff"
ANALYSTS = "Analysts"

# Apps whose models the roles cover in the admin.
ROLE_APPS = ("audience", "messaging", "campaigns", "reporting", "django_celery_beat")


def user_roles(user) -> set[str]:
    if not user or not user.is_authenticated:
        return set()
    cached = getattr(user, "_role_names", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            cached.add(STAFF)
        user._role_names = cached
    return cached


def is_staff_member(user) -> bool:
    return STAFF in user_roles(user)


def is_analyst(user) -> bool:
    return bool(user_roles(user) & {STAFF, ANALYSTS})


class StaffWriteAnalystRead(BasePermission):
    """Authenticated Staff may do anything; Analysts may only read; others are refused."""

    message = "Analysts have read-only access; this action needs the Staff role."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if request.method in SAFE_METHODS:
            return is_analyst(user)
        return is_staff_member(user)


def sync_role_permissions(**_kwargs) -> None:
    """Give Staff every permission of ROLE_APPS and Analysts their view permissions.

    Except celery-beat's schedules, which Staff only see: the campaign service keeps each
    campaign's task, and a hand-made periodic task could run any task with any arguments (a
    simulated inbound STOP, a launch of another campaign). Superusers keep them.
    """
    from django.contrib.auth.models import Group, Permission  # settings load this module before the apps

    permissions = Permission.objects.filter(content_type__app_label__in=ROLE_APPS)
    beat_writes = permissions.filter(content_type__app_label="django_celery_beat").exclude(codename__startswith="view_")
    staff = Group.objects.filter(name=STAFF).first()
    analysts = Group.objects.filter(name=ANALYSTS).first()
    if staff:
        staff.permissions.add(*permissions.exclude(pk__in=beat_writes))
        staff.permissions.remove(*beat_writes)
    if analysts:
        analysts.permissions.add(*permissions.filter(codename__startswith="view_"))
