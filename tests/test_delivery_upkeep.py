"""Beat schedules, the Celery tasks' wiring, and faults injected at the fake Twilio server."""

import pytest
from django_celery_beat.models import PeriodicTask

from campaigns import services
from campaigns.models import Recipient
from campaigns.tasks import dispatch_run, dispatch_upkeep, reap_stale_claims, release_held
from config.celery import app as celery_app
from messaging.services import send
from tests import delivery
from tests.delivery import assert_counts_match_recount, drain, make_campaign

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db


def test_the_upkeep_tasks_are_scheduled_by_name_in_beat():
    tasks = dict(PeriodicTask.objects.filter(name__startswith="campaigns: ").values_list("task", "enabled"))
    assert tasks == {
        "campaigns.release_held": True,
        "campaigns.reap_stale_claims": True,
        "campaigns.dispatch_upkeep": True,
    }
    assert all(name in celery_app.tasks for name in tasks)


@pytest.fixture
def eager_celery():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_launch_through_the_tasks_delivers_the_run_and_a_second_dispatch_does_nothing(
    fake, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.campaign_launch(make_campaign())
    run.refresh_from_db()
    assert run.status == "completed"
    assert [fake.requests_to(phone) for phone in delivery.PHONES] == [1] * len(delivery.PHONES)
    assert dispatch_run(run.pk) == 0
    assert (release_held(), reap_stale_claims(), dispatch_upkeep()) == (0, 0, 0)
    assert fake.stats()["requests"] == len(delivery.PHONES)
    assert_counts_match_recount(run)


def test_under_injected_errors_every_recipient_ends_sent_or_failed_with_a_reason(fake):
    phones = [f"+2547190000{n:02d}" for n in range(40)]
    fake.error_rate, fake.error_kind = 0.3, "503"
    run = services.campaign_launch(make_campaign(phones=phones))
    drain(run, hurry_retries=True, rounds=400)
    states = dict(Recipient.objects.filter(run=run).values_list("contact__phone", "state"))
    assert set(states.values()) <= {"sent", "failed"}
    assert all(r.reason for r in Recipient.objects.filter(run=run, state="failed"))
    # No retry storm: never more than the attempt cap per recipient.
    assert max(fake.requests_to(phone) for phone in phones) <= send.MAX_ATTEMPTS
    assert sum(state == "sent" for state in states.values()) >= len(phones) - 2
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert run.status == "completed"
