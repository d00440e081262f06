"""Pause, cancel and STOP while a dispatcher is sending in another thread."""

import threading
import time

import pytest
from django.db import connection

from audience import services as audience
from audience.models import ConsentSource, ConsentStatus
from campaigns import services
from campaigns.models import Campaign, Recipient
from campaigns.services import dispatcher
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db(transaction=True)

PHONES = [f"+2547150000{n:02d}" for n in range(20)]
MPS = 10


class Dispatcher(threading.Thread):
    """Runs the run's batches until the dispatcher says nothing is left, like a task chain."""

    def __init__(self, run_id: int):
        super().__init__()
        self.run_id = run_id
        self.errors: list[Exception] = []

    def run(self) -> None:
        try:
            while dispatcher.run_dispatch_batch(self.run_id)[1] is not None:
                pass
        except Exception as exc:  # noqa: BLE001 - asserted by the tests
            self.errors.append(exc)
        finally:
            connection.close()


def sent_so_far(fake) -> int:
    return fake.stats()["requests"]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_pause_mid_run_stops_within_a_send_and_resume_finishes_it(fake):
    campaign = campaign_with_audience(phones=PHONES, mps=MPS)
    run = services.campaign_launch(campaign)
    worker = Dispatcher(run.pk)
    worker.start()
    wait_for(lambda: sent_so_far(fake) >= 4)
    services.campaign_pause(Campaign.objects.get(pk=campaign.pk))
    at_pause = sent_so_far(fake)
    worker.join(timeout=5)
    assert not worker.is_alive() and worker.errors == []
    # At most the sends already handed to the provider (one dispatcher's in-flight requests).
    assert sent_so_far(fake) <= at_pause + dispatcher.sends_in_flight(campaign.sender_id, MPS)
    time.sleep(0.5)
    paused_total = sent_so_far(fake)
    assert paused_total < len(PHONES)
    assert Recipient.objects.filter(run=run, state="sending").count() == 0
    assert_counts_match_recount(run)

    services.campaign_resume(Campaign.objects.get(pk=campaign.pk))
    worker = Dispatcher(run.pk)
    worker.start()
    worker.join(timeout=10)
    assert worker.errors == []
    assert [fake.requests_to(phone) for phone in PHONES] == [1] * len(PHONES)
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert (run.status, run.sent) == ("completed", len(PHONES))


def test_cancel_mid_run_sends_nothing_more_and_skips_the_rest(fake):
    campaign = campaign_with_audience(phones=PHONES, mps=MPS)
    run = services.campaign_launch(campaign)
    worker = Dispatcher(run.pk)
    worker.start()
    wait_for(lambda: sent_so_far(fake) >= 3)
    services.campaign_cancel(Campaign.objects.get(pk=campaign.pk))
    at_cancel = sent_so_far(fake)
    worker.join(timeout=5)
    assert not worker.is_alive() and worker.errors == []
    time.sleep(0.3)
    assert sent_so_far(fake) <= at_cancel + dispatcher.sends_in_flight(campaign.sender_id, MPS)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert run.sent == sent_so_far(fake)
    assert run.skipped_by_reason == {"cancelled": len(PHONES) - run.sent}
    assert_counts_match_recount(run)


def test_a_stop_arriving_mid_run_is_honoured_at_once(fake):
    campaign = campaign_with_audience(phones=PHONES, mps=MPS)
    run = services.campaign_launch(campaign)
    last = Recipient.objects.filter(run=run).order_by("pk").last().contact
    worker = Dispatcher(run.pk)
    worker.start()
    wait_for(lambda: sent_so_far(fake) >= 2)
    audience.consent_change(last, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD, actor="STOP")
    worker.join(timeout=10)
    assert worker.errors == []
    assert fake.requests_to(last.phone) == 0
    recipient = Recipient.objects.get(run=run, contact=last)
    assert (recipient.state, recipient.reason) == ("skipped", "opted_out")
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert (run.status, run.sent, run.skipped) == ("completed", len(PHONES) - 1, 1)
