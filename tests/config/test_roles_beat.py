"""Staff see celery-beat's schedules but cannot write them; superusers can."""

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.roles import sync_role_permissions
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_staff_can_view_but_not_add_change_or_delete_periodic_tasks(client):
    sync_role_permissions()
    every = IntervalSchedule.objects.create(every=60, period="seconds")
    task = PeriodicTask.objects.create(name="a schedule", task="audience.import_jobs_resume", interval=every)
    client.force_login(UserFactory(username="staffer", role="Staff"))
    assert client.get("/admin/django_celery_beat/periodictask/").status_code == 200
    assert client.get("/admin/django_celery_beat/periodictask/add/").status_code == 403
    # A hand-made task could run anything: a simulated inbound STOP for any phone, say.
    client.post(
        "/admin/django_celery_beat/periodictask/add/",
        {"name": "forged", "regtask": "messaging.simulated_status_step", "interval": every.pk, "enabled": "on"},
    )
    assert not PeriodicTask.objects.filter(name="forged").exists()
    client.post(f"/admin/django_celery_beat/periodictask/{task.pk}/delete/", {"post": "yes"})
    assert PeriodicTask.objects.filter(pk=task.pk).exists()


def test_superusers_still_manage_periodic_tasks(client):
    client.force_login(UserFactory(username="root", is_superuser=True))
    assert client.get("/admin/django_celery_beat/periodictask/add/").status_code == 200
