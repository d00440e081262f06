"""Outcomes unknown: a send the provider may or may not hold, when the provider cannot be asked.

Sends go through the real twilio client to the fake Twilio server; its list endpoint is made to
answer 404 (as in the field) by pointing the client under a path the fake does not serve.
"""

import logging
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from campaigns import services as campaigns
from campaigns.models import CampaignRun, Recipient
from campaigns.services import dispatcher, upkeep
from messaging import selectors
from messaging.models import Message, MessageStatus
from messaging.providers import ErrorKind, ProviderError
from messaging.services import reconcile
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience, drain
from tests.unknown_outcomes import (
    PHONES,
    age,
    beat_upkeep,
    completed_run_with_unknowns,
    lookups_fail,
    lookups_recover,
    next_beat_run,
    timed_out,
    worker_died,
)

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db


def _states(run: CampaignRun) -> dict[str, str]:
    return dict(Recipient.objects.filter(run=run).values_list("contact__phone", "state"))


def _statuses(run: CampaignRun) -> dict[str, str]:
    return dict(Message.objects.filter(recipient__run=run).values_list("to_address", "status"))


def test_a_run_whose_lookups_fail_completes_with_its_outcomes_unknown_then_settles_when_they_answer(fake, settings):
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:6]))
    timed_out(fake, run, PHONES[:2])
    assert _states(run)[PHONES[0]] == "sending"
    age(run)
    lookups_fail(settings, fake)

    beat_upkeep()
    run.refresh_from_db()
    assert (run.status, run.sent, run.unknown, run.sending) == ("completed", 4, 2, 0)
    assert_counts_match_recount(run)
    unknown = Message.objects.filter(status=MessageStatus.UNKNOWN)
    assert sorted(unknown.values_list("to_address", flat=True)) == PHONES[:2]
    assert all("could not be asked" in m.error_message and m.provider_sid is None for m in unknown)
    assert {_states(run)[phone] for phone in PHONES[:2]} == {"unknown"}

    lookups_recover(settings, fake)
    next_beat_run()
    beat_upkeep()
    run.refresh_from_db()
    assert (run.status, run.sent, run.unknown) == ("completed", 6, 0)
    assert_counts_match_recount(run)
    created = {m["to"]: m["sid"] for m in fake.messages()}
    adopted = dict(Message.objects.filter(to_address__in=PHONES[:2]).values_list("to_address", "provider_sid"))
    assert adopted == {phone: created[phone] for phone in PHONES[:2]}
    assert [fake.requests_to(phone) for phone in PHONES[:6]] == [1] * 6  # found, never sent again


def test_a_message_found_missing_after_its_run_completed_fails_and_nothing_is_sent(fake, settings):
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:3]))
    [lost] = worker_died(run, 1)
    drain(run)
    age(run)
    lookups_fail(settings, fake)
    beat_upkeep()
    run.refresh_from_db()
    assert (run.status, run.unknown) == ("completed", 1)

    lookups_recover(settings, fake)
    next_beat_run()
    beat_upkeep()
    lost.refresh_from_db()
    assert (lost.status, lost.error_code) == (MessageStatus.FAILED, "unsent")
    assert "run had ended" in lost.error_message
    recipient = Recipient.objects.get(message=lost)
    assert (recipient.state, recipient.reason) == ("failed", "unsent")
    assert dispatcher.run_dispatch_batch(run.pk) == (0, None)
    run.refresh_from_db()
    assert (run.status, run.sent, run.failed, run.unknown) == ("completed", 2, 1, 0)
    assert_counts_match_recount(run)
    assert fake.requests_to(lost.to_address) == 0


def test_a_message_found_missing_while_its_run_runs_is_sent_once(fake, settings):
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:3]))
    [lost] = worker_died(run, 1)
    age(run)
    lookups_fail(settings, fake)
    reconcile.messages_reconcile_stale()
    upkeep.recipients_reap()
    assert Recipient.objects.get(message=lost).state == "unknown"
    run.refresh_from_db()
    assert (run.status, run.unknown, run.pending) == ("running", 1, 2)

    lookups_recover(settings, fake)
    next_beat_run()
    reconcile.messages_reconcile_stale()
    upkeep.recipients_reap()
    assert Recipient.objects.get(message=lost).state == "pending"
    drain(run)
    run.refresh_from_db()
    assert (run.status, run.sent, run.unknown) == ("completed", 3, 0)
    assert_counts_match_recount(run)
    assert [fake.requests_to(phone) for phone in PHONES[:3]] == [1, 1, 1]


def test_cancelling_a_run_settles_its_lost_sends_and_leaves_nothing_in_sending(fake, settings):
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:4], mps=1))
    for phone in PHONES[:4]:
        fake.fail(phone, "timeout")
    assert dispatcher.run_dispatch_batch(run.pk) == (2, 0.0)  # one batch (2 s at 1 MPS): both time out
    # The two the batch claimed (the launch's snapshot decides which come first).
    first, second = sorted(Recipient.objects.filter(run=run, state="sending").values_list("contact__phone", flat=True))
    age(run, phones=[first])  # one lost long ago; the other just claimed, its answer may still come

    campaigns.campaign_cancel(run.campaign)
    run.refresh_from_db()
    assert _statuses(run)[first] == MessageStatus.UNKNOWN
    assert _states(run)[first] == "unknown"
    assert _states(run)[second] == "sending"  # in flight: its dispatcher or the reaper settles it
    assert (run.status, run.unknown, run.sending, run.skipped) == ("cancelled", 1, 1, 2)
    assert_counts_match_recount(run)

    age(run, phones=[second])
    lookups_fail(settings, fake)
    beat_upkeep()
    run.refresh_from_db()
    assert not Recipient.objects.filter(run=run, state="sending").exists()
    assert not Message.objects.filter(recipient__run=run, status=MessageStatus.SENDING).exists()
    assert (run.unknown, run.sending) == (2, 0)
    assert_counts_match_recount(run)

    lookups_recover(settings, fake)  # both were created at the fake: found, sent, on the cancelled run
    next_beat_run()
    beat_upkeep()
    run.refresh_from_db()
    assert (run.status, run.sent, run.unknown) == ("cancelled", 2, 0)
    assert_counts_match_recount(run)
    assert {phone: fake.requests_to(phone) for phone in PHONES[:4]} == {
        phone: int(phone in (first, second)) for phone in PHONES[:4]
    }


def test_an_unknown_outcome_is_failed_once_the_give_up_window_has_passed(fake, settings):
    settings.DELIVERY_UNKNOWN_GIVE_UP_MINUTES = 10
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:2]))
    timed_out(fake, run, PHONES[:2])
    age(run, minutes=11, phones=PHONES[:1])
    age(run, minutes=2, phones=PHONES[1:2])
    lookups_fail(settings, fake)
    beat_upkeep()

    expired = Message.objects.get(to_address=PHONES[0])
    assert (expired.status, expired.error_code) == (MessageStatus.FAILED, "unknown")
    assert "could not be asked before the give-up" in expired.error_message
    waiting = Message.objects.get(to_address=PHONES[1])
    assert waiting.status == MessageStatus.UNKNOWN
    assert selectors.unknown_gives_up_at(waiting) == waiting.sending_at + timedelta(minutes=10)
    assert selectors.unknown_gives_up_at(expired) is None
    recipient = Recipient.objects.get(message=expired)
    assert (recipient.state, recipient.reason) == ("failed", "unknown")
    run.refresh_from_db()
    assert (run.status, run.failed, run.unknown) == ("completed", 1, 1)
    assert_counts_match_recount(run)

    Message.objects.filter(pk=waiting.pk).update(sending_at=timezone.now() - timedelta(minutes=10, seconds=1))
    next_beat_run()
    beat_upkeep()
    waiting.refresh_from_db()
    assert (waiting.status, waiting.error_code) == (MessageStatus.FAILED, "unknown")
    run.refresh_from_db()
    assert (run.failed, run.unknown) == (2, 0)
    assert_counts_match_recount(run)


def test_failing_lookups_pause_the_asking_for_the_rest_of_a_beat_run(fake, settings, caplog, monkeypatch):
    monkeypatch.setattr(reconcile, "LOOKUPS_AT_ONCE", 5)  # the first five are asked together, and fail
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:7]))
    worker_died(run, 7)
    age(run)
    lookups_fail(settings, fake)
    with caplog.at_level(logging.WARNING, logger="messaging.services.reconcile"):
        assert reconcile.messages_reconcile_stale() == 7
    unknown = list(Message.objects.filter(status=MessageStatus.UNKNOWN).order_by("pk"))
    assert len(unknown) == 7
    not_asked = [m.pk for m in unknown if "not asked: the last 5 lookups failed" in m.error_message]
    assert not_asked == [m.pk for m in unknown[5:]]
    assert "lookup failed 5 times in a row; 2 messages wait" in caplog.text


def test_reconciling_again_at_once_asks_nothing_and_changes_nothing(fake, settings):
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:2]))
    worker_died(run, 2)
    age(run)
    lookups_fail(settings, fake)
    assert reconcile.messages_reconcile_stale() == 2
    before = list(Message.objects.order_by("pk").values_list("status", "claimed_at", "error_message"))
    assert reconcile.messages_reconcile_stale() == 0
    assert [reconcile.message_reconcile(m.pk).status for m in Message.objects.all()] == ["unknown", "unknown"]
    assert list(Message.objects.order_by("pk").values_list("status", "claimed_at", "error_message")) == before


@pytest.mark.django_db(transaction=True)
def test_concurrent_reconcilers_and_reapers_settle_each_unknown_outcome_once(fake, settings):
    run = completed_run_with_unknowns(fake, settings)
    lookups_recover(settings, fake)
    next_beat_run()
    barrier = threading.Barrier(3)
    errors = []

    def beat():
        try:
            barrier.wait()
            reconcile.messages_reconcile_stale()
            upkeep.recipients_reap()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    upkeep.recipients_reap()  # a reaper that read before a reconciler committed catches up next run
    assert errors == []
    run.refresh_from_db()
    assert (run.status, run.sent, run.failed, run.unknown) == ("completed", 3, 1, 0)
    assert_counts_match_recount(run)
    assert _statuses(run)[PHONES[0]] == MessageStatus.FAILED  # never created, its run had ended
    assert [fake.requests_to(phone) for phone in PHONES[:4]] == [0, 1, 1, 1]


def test_a_lookups_answer_moves_nothing_once_the_message_was_claimed_again(fake, settings):
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:1]))
    [message] = worker_died(run, 1)
    looked_up_at = timezone.now() - timedelta(seconds=5)
    Message.objects.filter(pk=message.pk).update(claimed_at=timezone.now())  # sent again since the lookup began
    message.refresh_from_db()
    assert reconcile._not_at_provider(message, looked_up_at).status == MessageStatus.SENDING
    assert reconcile._lookup_failed(message, ProviderError(ErrorKind.RETRYABLE, "", "down"), looked_up_at).status == (
        MessageStatus.SENDING
    )
    assert Message.objects.get(pk=message.pk).error_message == ""


def test_a_beat_run_asks_the_provider_about_lost_sends_several_at_a_time(fake, monkeypatch):
    """A worker killed with many sends in flight leaves many to look up, each waiting for the API."""
    from tests.fake_twilio.latency import Latency

    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:6]))
    lost = worker_died(run, 6)
    age(run)
    fake.latency = Latency.fixed(0.2)
    assert reconcile.messages_reconcile_stale() == 6
    assert fake.stats()["max_concurrent"] == 6  # the six lookups were out together
    assert {m.status for m in Message.objects.filter(pk__in=[m.pk for m in lost])} == {MessageStatus.PENDING}
