"""Beat schedules, the Celery tasks' wiring, and faults injected at the fake Twilio server."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns import services
from campaigns.models import Recipient
from campaigns.services import dispatcher, upkeep
from campaigns.tasks import dispatch_upkeep, held_release, recipients_reap, run_dispatch
from config.celery import app as celery_app
from messaging.models import Message, MessageStatus
from messaging.services import reconcile, send_outcomes
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience, drain

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db


def test_the_upkeep_tasks_are_scheduled_by_name_in_beat():
    tasks = dict(PeriodicTask.objects.filter(name__startswith="campaigns: ").values_list("task", "enabled"))
    assert tasks == {
        "campaigns.held_release": True,
        "campaigns.recipients_reap": True,
        "campaigns.dispatch_upkeep": True,
        "campaigns.event_retention_purge": True,
        "campaigns.events_sweep": True,
        "campaigns.conversions_attribute": True,
        "campaigns.winners_pick": True,
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
        run = services.campaign_launch(campaign_with_audience())
    run.refresh_from_db()
    assert run.status == "completed"
    assert [fake.requests_to(phone) for phone in delivery.PHONES] == [1] * len(delivery.PHONES)
    assert run_dispatch(run.pk) == 0
    assert (held_release(), recipients_reap(), dispatch_upkeep()) == (0, 0, 0)
    assert fake.stats()["requests"] == len(delivery.PHONES)
    assert_counts_match_recount(run)


def test_under_injected_errors_every_recipient_ends_sent_or_failed_with_a_reason(fake):
    phones = [f"+2547190000{n:02d}" for n in range(40)]
    fake.error_rate, fake.error_kind = 0.3, "503"
    run = services.campaign_launch(campaign_with_audience(phones=phones))
    drain(run, hurry_retries=True, rounds=400)
    states = dict(Recipient.objects.filter(run=run).values_list("contact__phone", "state"))
    assert set(states.values()) <= {"sent", "failed"}
    assert all(r.reason for r in Recipient.objects.filter(run=run, state="failed"))
    # No retry storm: never more than the attempt cap per recipient.
    assert max(fake.requests_to(phone) for phone in phones) <= send_outcomes.MAX_ATTEMPTS
    assert sum(state == "sent" for state in states.values()) >= len(phones) - 2
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert run.status == "completed"


def test_under_a_mix_of_500s_429s_and_timeouts_every_recipient_ends_sent_or_failed_without_a_storm(fake):
    phones = [f"+2547191000{n:02d}" for n in range(60)]
    fake.error_mix = {"500": 0.10, "429": 0.05, "timeout": 0.03}
    run = services.campaign_launch(campaign_with_audience(phones=phones))
    # First pass: every retry waits its backoff (capped, exponential, with jitter), nothing is resent early.
    dispatcher.run_dispatch_batch(run.pk)
    waiting = Message.objects.filter(status=MessageStatus.PENDING, next_attempt_at__isnull=False)
    assert waiting.exists()
    for message in waiting:  # updated_at is when the error answered
        ceiling = min(send_outcomes.BACKOFF_CAP, send_outcomes.BACKOFF_BASE * 2 ** (message.attempts - 1))
        assert ceiling / 2 <= (message.next_attempt_at - message.updated_at).total_seconds() <= ceiling
    drain(run, hurry_retries=True, rounds=400)
    # Timed-out sends stay `sending` until the provider is asked (never resent blindly).
    past = timezone.now() - send_outcomes.STALE_SENDING_AFTER - timedelta(seconds=5)
    Message.objects.filter(status=MessageStatus.SENDING).update(claimed_at=past, sending_at=past)
    reconcile.messages_reconcile_stale()
    upkeep.recipients_reap(now=timezone.now() + upkeep.STALE_CLAIM_AFTER * 2)
    drain(run, hurry_retries=True, rounds=400)

    recipients = Recipient.objects.filter(run=run).select_related("message")
    assert {r.state for r in recipients} <= {"sent", "failed"}
    assert all(r.reason for r in recipients if r.state == "failed")
    # Exactly one message created at the provider per sent recipient, none for a failed one.
    created = fake.stats()["created_by_recipient"]
    assert all(created.get(r.contact.phone, 0) == (1 if r.state == "sent" else 0) for r in recipients)
    # No retry storm: the attempt cap per recipient, and about 1 / (1 - 0.18) requests per recipient overall.
    assert max(fake.requests_to(phone) for phone in phones) <= send_outcomes.MAX_ATTEMPTS
    assert fake.stats()["requests"] <= len(phones) * 1.6
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert run.status == "completed"
