"""The delivery engine in one process: claims, outcomes, retries, held, expiry, reaping, completion.

Sends go through the real twilio client to the fake Twilio server; pacing uses the real Redis.
"""

import datetime as dt
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from audience import services as audience
from audience.models import ConsentSource, ConsentStatus
from campaigns import services
from campaigns.models import Campaign, CampaignRun, Recipient
from campaigns.services import chains, dispatch, dispatcher, upkeep
from messaging import pacing
from messaging.models import Message, MessageStatus
from messaging.services import reconcile, send, send_outcomes
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience, drain

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db

PHONES = delivery.PHONES


def test_a_launched_run_sends_each_recipient_once_and_completes(fake):
    campaign = campaign_with_audience()
    run = services.campaign_launch(campaign)
    drain(run)
    assert [fake.requests_to(phone) for phone in PHONES] == [1] * len(PHONES)
    assert set(Recipient.objects.values_list("state", flat=True)) == {"sent"}
    assert all(r.message.provider_sid and r.sent_at for r in Recipient.objects.select_related("message"))
    assert_counts_match_recount(run)
    run.refresh_from_db()
    campaign.refresh_from_db()
    assert (run.status, run.sent, campaign.status) == ("completed", len(PHONES), "completed")


def test_running_the_dispatcher_twice_sends_nothing_twice(fake):
    run = services.campaign_launch(campaign_with_audience())
    drain(run)
    assert dispatcher.run_dispatch_batch(run.pk) == (0, None)
    assert fake.stats()["requests"] == len(PHONES)


def test_launch_starts_dispatch_only_after_commit(fake, django_capture_on_commit_callbacks):
    campaign = campaign_with_audience()
    with django_capture_on_commit_callbacks() as callbacks:
        run = services.campaign_launch(campaign)
        assert fake.stats()["requests"] == 0
    # The dispatchers' start and the run's cost estimate, both enqueued once the launch commits.
    assert sorted(callback.__qualname__.split(".")[0] for callback in callbacks) == [
        "dispatch_start",
        "run_cost_estimate_enqueue",
    ]
    assert Recipient.objects.filter(run=run, state="pending").count() == len(PHONES)


def test_a_claim_moves_pending_to_sending_and_links_a_message(fake):
    run = services.campaign_launch(campaign_with_audience())
    claimed = dispatch.recipients_claim(run, 4)
    assert len(claimed) == 4
    rows = Recipient.objects.filter(pk__in=[pk for pk, _ in claimed])
    assert set(rows.values_list("state", flat=True)) == {"sending"}
    assert all(r.message.source == r and r.message.status == "pending" for r in rows.select_related("message"))
    assert_counts_match_recount(run)
    again = dispatch.recipients_claim(run, 10)
    assert len(again) == len(PHONES) - 4
    assert not {pk for pk, _ in again} & {pk for pk, _ in claimed}


def test_a_stop_after_launch_is_honoured_at_send_time(fake):
    run = services.campaign_launch(campaign_with_audience())
    contact = Recipient.objects.filter(run=run).order_by("pk")[2].contact
    audience.consent_change(contact, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD, actor="STOP")
    drain(run)
    recipient = Recipient.objects.get(run=run, contact=contact)
    assert (recipient.state, recipient.reason) == ("skipped", "opted_out")
    assert fake.requests_to(contact.phone) == 0
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert (run.sent, run.skipped, run.skipped_by_reason) == (len(PHONES) - 1, 1, {"opted_out": 1})


def test_a_21610_from_twilio_skips_the_recipient_as_opted_out(fake):
    run = services.campaign_launch(campaign_with_audience())
    fake.fail(PHONES[0], "21610")
    drain(run)
    recipient = Recipient.objects.get(run=run, contact__phone=PHONES[0])
    assert (recipient.state, recipient.reason) == ("skipped", "opted_out")
    assert recipient.contact.consent_status == ConsentStatus.OPTED_OUT
    assert_counts_match_recount(run)


def test_a_retryable_error_is_retried_then_sent(fake):
    run = services.campaign_launch(campaign_with_audience())
    fake.fail(PHONES[1], "429", times=2)
    drain(run, hurry_retries=True)
    recipient = Recipient.objects.get(run=run, contact__phone=PHONES[1])
    assert recipient.state == "sent" and recipient.message.attempts == 3
    assert fake.requests_to(PHONES[1]) == 3
    assert_counts_match_recount(run)


def test_a_recipient_waiting_for_its_retry_is_not_claimed_early(fake):
    run = services.campaign_launch(campaign_with_audience(phones=PHONES[:1]))
    fake.fail(PHONES[0], "503")
    claimed, again = dispatcher.run_dispatch_batch(run.pk)
    assert claimed == 1 and again == 0
    claimed, again = dispatcher.run_dispatch_batch(run.pk)
    assert claimed == 0 and 0.5 <= again <= dispatcher.RETRY_POLL_MAX
    assert Recipient.objects.get(run=run).state == "pending"
    assert fake.requests_to(PHONES[0]) == 1
    assert send.messages_send_due() == 0  # campaign messages are retried by the dispatcher, paced
    assert_counts_match_recount(run)


def test_retries_stop_at_the_cap_and_the_recipient_fails_with_the_reason(fake):
    run = services.campaign_launch(campaign_with_audience())
    fake.fail(PHONES[2], "500", times=20)
    drain(run, hurry_retries=True)
    recipient = Recipient.objects.get(run=run, contact__phone=PHONES[2])
    assert (recipient.state, recipient.reason) == ("failed", "20500")
    assert f"gave up after {send_outcomes.MAX_ATTEMPTS} attempts" in recipient.detail
    assert fake.requests_to(PHONES[2]) == send_outcomes.MAX_ATTEMPTS
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert (run.status, run.failed, run.sent) == ("completed", 1, len(PHONES) - 1)


def test_a_permanent_error_fails_the_recipient_at_once(fake):
    run = services.campaign_launch(campaign_with_audience())
    fake.fail(PHONES[3], "21211")
    drain(run)
    recipient = Recipient.objects.get(run=run, contact__phone=PHONES[3])
    assert (recipient.state, recipient.reason) == ("failed", "21211")
    assert fake.requests_to(PHONES[3]) == 1
    assert_counts_match_recount(run)


def test_pause_stops_sending_and_resume_finishes_the_run(fake):
    campaign = campaign_with_audience()
    run = services.campaign_launch(campaign)
    claimed = dispatch.recipients_claim(run, 3)
    send.message_send(claimed[0][1])  # one send went out before the pause
    services.campaign_pause(campaign)
    assert dispatcher.run_dispatch_batch(run.pk) == (0, None)
    dispatch.recipients_release(run.pk, [pk for pk, _ in claimed[1:]])
    assert upkeep.recipients_reap(now=timezone.now() + timedelta(minutes=1)) == 1  # the sent one settles
    assert fake.stats()["requests"] == 1
    assert_counts_match_recount(run)
    services.campaign_resume(campaign)
    drain(run)
    assert [fake.requests_to(phone) for phone in PHONES] == [1] * len(PHONES)
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert run.status == "completed"


def test_cancel_skips_claimed_and_waiting_recipients_and_sends_nothing_more(fake):
    campaign = campaign_with_audience()
    run = services.campaign_launch(campaign)
    claimed = dispatch.recipients_claim(run, 2)
    services.campaign_cancel(campaign)
    assert dispatcher.run_dispatch_batch(run.pk) == (0, None)
    dispatch.recipients_release(run.pk, [pk for pk, _ in claimed])
    assert fake.stats()["requests"] == 0
    assert set(Recipient.objects.filter(run=run).values_list("state", "reason")) == {("skipped", "cancelled")}
    assert not Message.objects.filter(status=MessageStatus.PENDING).exists()
    assert_counts_match_recount(run)


def test_a_crash_after_twilio_accepted_is_settled_as_sent_without_a_resend(fake):
    run = services.campaign_launch(campaign_with_audience(phones=PHONES[:2]))
    claimed = dispatch.recipients_claim(run, 2)
    for _, message_id in claimed:
        send.message_send(message_id)  # the worker dies here, before recording the outcome
    assert upkeep.recipients_reap(now=timezone.now() + timedelta(minutes=1)) == 2
    assert set(Recipient.objects.values_list("state", flat=True)) == {"sent"}
    assert fake.stats()["requests"] == 2
    assert_counts_match_recount(run)
    assert upkeep.runs_complete() == 1


def test_a_crash_before_the_send_is_requeued_after_the_claim_goes_stale(fake):
    run = services.campaign_launch(campaign_with_audience(phones=PHONES[:2]))
    dispatch.recipients_claim(run, 2)  # the worker dies here
    assert upkeep.recipients_reap(now=timezone.now() + timedelta(minutes=1)) == 0  # maybe still alive
    assert upkeep.recipients_reap(now=timezone.now() + upkeep.STALE_CLAIM_AFTER * 2) == 2
    assert_counts_match_recount(run)
    drain(run)
    assert [fake.requests_to(phone) for phone in PHONES[:2]] == [1, 1]


def test_a_timed_out_send_is_reconciled_with_twilio_never_resent(fake):
    run = services.campaign_launch(campaign_with_audience(phones=PHONES[:1]))
    fake.fail(PHONES[0], "timeout")
    assert dispatcher.run_dispatch_batch(run.pk) == (1, 0.0)
    recipient = Recipient.objects.get(run=run)
    assert recipient.state == "sending" and recipient.message.status == MessageStatus.SENDING
    assert dispatcher.run_dispatch_batch(run.pk) == (0, None)  # nothing due; the run is not complete
    past = timezone.now() - send_outcomes.STALE_SENDING_AFTER - timedelta(seconds=5)
    Message.objects.filter(pk=recipient.message_id).update(claimed_at=past, sending_at=past)
    reconcile.messages_reconcile_stale()
    assert upkeep.recipients_reap(now=timezone.now() + timedelta(minutes=5)) == 1
    recipient.refresh_from_db()
    assert recipient.state == "sent" and recipient.message.provider_sid
    assert fake.requests_to(PHONES[0]) == 1
    assert_counts_match_recount(run)
    assert upkeep.runs_complete() == 1


def _quiet_now(campaign: Campaign, settings) -> None:
    """Quiet hours from an hour ago to an hour ahead, on the UTC clock of these zone-less contacts."""
    settings.DEFAULT_TIMEZONE = "UTC"  # not the environment's: the window below is a UTC one
    now = timezone.now()
    campaign.quiet_start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    campaign.quiet_end = (now + timedelta(hours=1)).time().replace(second=0, microsecond=0)
    campaign.save()


def test_held_recipients_are_released_when_their_window_opens(fake, settings):
    campaign = campaign_with_audience(phones=PHONES[:3])
    _quiet_now(campaign, settings)
    run = services.campaign_launch(campaign)
    run.refresh_from_db()
    assert (run.held, run.pending) == (3, 0)
    assert upkeep.held_release() == 0
    drain(run)
    assert fake.stats()["requests"] == 0
    release_at = Recipient.objects.filter(run=run).values_list("release_at", flat=True).first()
    assert upkeep.held_release(now=release_at + timedelta(seconds=1)) == 3
    assert_counts_match_recount(run)
    drain(run)
    assert [fake.requests_to(phone) for phone in PHONES[:3]] == [1, 1, 1]
    run.refresh_from_db()
    assert run.status == "completed"


def test_held_recipients_past_the_validity_are_skipped_as_expired(fake, settings):
    campaign = campaign_with_audience(phones=PHONES[:2], validity=dt.timedelta(hours=3))
    _quiet_now(campaign, settings)
    run = services.campaign_launch(campaign)
    assert upkeep.held_release(now=timezone.now() + timedelta(hours=4)) == 2
    assert set(Recipient.objects.filter(run=run).values_list("state", "reason")) == {("skipped", "expired")}
    assert_counts_match_recount(run)
    assert upkeep.runs_complete() == 1
    assert fake.stats()["requests"] == 0


def test_pending_recipients_past_the_validity_are_skipped_as_expired(fake):
    run = services.campaign_launch(campaign_with_audience(validity=dt.timedelta(minutes=5)))
    CampaignRun.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(minutes=6))
    drain(run)
    assert fake.stats()["requests"] == 0
    assert set(Recipient.objects.filter(run=run).values_list("state", "reason")) == {("skipped", "expired")}
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert run.status == "completed"


def test_upkeep_fills_the_place_of_a_dead_dispatcher_and_leaves_a_live_one_alone(
    fake, django_capture_on_commit_callbacks
):
    run = services.campaign_launch(campaign_with_audience())
    key = f"dispatch:run:{run.pk}:chain:0"
    live = chains.chain_claim(run.pk, 0)  # a dispatcher holds the run's one place
    with django_capture_on_commit_callbacks(execute=True):
        assert upkeep.runs_kick() == 1
    assert pacing.redis_client().get(key).decode() == live  # nothing started beside it

    pacing.redis_client().delete(key)  # its worker died: no batch refreshed the place
    with django_capture_on_commit_callbacks(execute=True):
        upkeep.runs_kick()
    started = pacing.redis_client().get(key).decode()
    assert started != live  # a new dispatcher holds it
    assert not chains.chain_keep(run.pk, 0, live)  # the presumed-dead one stops if it was only slow
    assert chains.chain_keep(run.pk, 0, started)
    chains.chain_release(run.pk, 0, started)


def test_a_batch_held_up_past_its_claim_window_sends_nothing_more(fake, monkeypatch):
    """A batch stalled (pacing waits out a Redis outage) stops before the reaper may reconcile its
    claims: what it had not sent goes back to pending, and is sent once by the next batch."""
    from messaging.services import send_batch

    campaign = campaign_with_audience()
    run = services.campaign_launch(campaign)
    message_ids = [m for _, m in dispatch.recipients_claim(run, 10)]
    # Wide enough for the claim and two sends even on a busy host; the late token comes well past it.
    monkeypatch.setattr(send_batch, "CLAIM_SEND_WINDOW", 1.0)
    calls = []

    def pace(idle=None):
        calls.append(1)
        if len(calls) == 3:
            time.sleep(1.2)  # the third token comes late: past the window
        return True

    batch = send_batch.messages_send_batch(message_ids, pace=pace)
    assert fake.stats()["requests"] == 2
    assert len(batch.unsent) == len(delivery.PHONES) - 2
    assert set(Message.objects.filter(pk__in=batch.unsent).values_list("status", "attempts")) == {("pending", 0)}
    dispatch.recipients_release(run.pk, [r.pk for r in Recipient.objects.filter(run=run, message_id__in=batch.unsent)])
    monkeypatch.setattr(send_batch, "CLAIM_SEND_WINDOW", 30.0)
    drain(run)
    assert all(fake.requests_to(phone) == 1 for phone in delivery.PHONES)


def test_a_dispatcher_whose_batch_outlived_its_claim_window_carries_on_while_the_run_runs(fake, monkeypatch):
    """A batch held up (the sender's pace shared with transactional sends on a busy machine) gives
    back what it had not sent; the dispatcher then claims it again, instead of stopping and
    leaving the run to the next upkeep."""
    from messaging.services import send_batch

    campaign = campaign_with_audience()
    run = services.campaign_launch(campaign)
    monkeypatch.setattr(send_batch, "CLAIM_SEND_WINDOW", 1.0)
    calls = []

    def slow_pacer(sender_id, mps, watch):
        def pace(idle=None):
            calls.append(1)
            if len(calls) == 3:
                time.sleep(1.2)  # past the window
            return True

        return pace

    monkeypatch.setattr(dispatcher, "_pacer", slow_pacer)
    run_dispatcher = dispatcher.RunDispatcher(run.pk)
    try:
        sent, again = run_dispatcher.batch()
        assert (sent, again) == (2, 0.0)
        assert Recipient.objects.filter(run=run, state="pending").count() == len(delivery.PHONES) - 2
        monkeypatch.setattr(send_batch, "CLAIM_SEND_WINDOW", 30.0)
        while run_dispatcher.batch()[1] == 0.0:
            pass
    finally:
        run_dispatcher.close()
    assert all(fake.requests_to(phone) == 1 for phone in delivery.PHONES)
    assert not Recipient.objects.filter(run=run, state__in=["pending", "sending"]).exists()


def test_a_dispatcher_whose_run_was_paused_mid_batch_stops(fake, monkeypatch):
    campaign = campaign_with_audience()
    run = services.campaign_launch(campaign)

    def pausing_pacer(sender_id, mps, watch):
        def pace(idle=None):
            services.campaign_pause(campaign)
            return False  # as the real pacer answers once the run is no longer running

        return pace

    monkeypatch.setattr(dispatcher, "_pacer", pausing_pacer)
    run_dispatcher = dispatcher.RunDispatcher(run.pk)
    try:
        assert run_dispatcher.batch() == (0, None)
    finally:
        run_dispatcher.close()
    assert fake.stats()["requests"] == 0
    assert Recipient.objects.filter(run=run, state="pending").count() == len(delivery.PHONES)
