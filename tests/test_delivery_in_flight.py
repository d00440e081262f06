"""Requests in flight: as many as the rate needs at the provider's latency, never more than the cap."""

import bisect
import random
import statistics
import time

import pytest

from campaigns import services
from campaigns.models import CampaignRun
from campaigns.services import dispatch, dispatcher, estimates
from messaging.models import Message
from messaging.providers import SendRequest
from messaging.providers.twilio.client import TwilioProvider
from messaging.services import inflight, send_batch
from tests import delivery
from tests.delivery import assert_counts_match_recount, make_campaign
from tests.fake_twilio.latency import Latency

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db(transaction=True)

UNTHROTTLED = 1_000_000


def phones(count: int, prefix: str = "+2547160") -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(count)]


def run_to_the_end(run_id: int, rounds: int = 200) -> None:
    """Batches until nothing is left, through one dispatcher (as one task round would)."""
    run_dispatcher = dispatcher.RunDispatcher(run_id)
    try:
        for _ in range(rounds):
            if run_dispatcher.batch()[1] is None:
                return
    finally:
        run_dispatcher.close()
    raise AssertionError("the dispatcher never finished")


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


# --- The fake's latency model -----------------------------------------------------------------


def test_a_realistic_latency_has_the_median_and_p99_it_was_given_and_rare_stalls():
    model = Latency.realistic(median=0.25, p99=1.5)
    rng = random.Random(7)
    draws = sorted(model.sample(rng) for _ in range(40_000))
    assert statistics.median(draws) == pytest.approx(0.25, rel=0.05)
    assert draws[int(0.99 * len(draws))] == pytest.approx(1.5, rel=0.1)
    stalls = sum(1 for d in draws if d == model.stall_seconds)
    assert 10 <= stalls <= 80  # one in a thousand
    assert statistics.mean(draws) == pytest.approx(model.mean, rel=0.05)


def test_a_fixed_latency_is_the_same_for_every_send():
    model = Latency.fixed(0.3)
    assert {model.sample(random.Random(1)) for _ in range(100)} == {0.3}
    assert model.describe()["model"] == "fixed"


def test_a_latency_whose_p99_is_below_its_median_is_refused():
    with pytest.raises(ValueError, match="p99"):
        Latency(median=0.3, p99=0.1)


# --- The Twilio client tells when the request has left -----------------------------------------


def test_the_twilio_client_calls_on_sent_once_the_request_is_written_before_the_answer(fake):
    fake.latency = 0.3
    provider = TwilioProvider(delivery.SID, delivery.TOKEN, fake.base_url, (3.05, 10.0))
    marks = []
    began = time.monotonic()
    result = provider.send(
        SendRequest(to="+254716099999", channel="sms", from_="+15005550006", body="Hi"),
        on_sent=lambda: marks.append(time.monotonic()),
    )
    answered = time.monotonic()
    assert result.provider_sid.startswith("SM")
    assert len(marks) == 1
    assert marks[0] - began < 0.25  # written at once, not after the provider's 300 ms
    assert answered - marks[0] >= 0.29


# --- The in-flight cap -------------------------------------------------------------------------


def test_the_cap_is_mps_times_latency_with_headroom_and_at_least_a_second_of_sends(settings):
    settings.DELIVERY_MAX_IN_FLIGHT_PER_SENDER = 1000
    settings.DELIVERY_MAX_IN_FLIGHT = 1000
    slow = inflight.LatencyGauge(2.0)
    assert inflight.InFlightLimit(80, slow).cap() == 80 * 2 * inflight.HEADROOM + inflight.SPARE
    fast = inflight.LatencyGauge(0.03)
    assert inflight.InFlightLimit(80, fast).cap() == 80 + inflight.SPARE  # a window's sends may leave together
    assert inflight.InFlightLimit(UNTHROTTLED, fast).cap() == 1000  # the ceiling


def test_the_cap_follows_the_latency_observed():
    gauge = inflight.LatencyGauge(0.5)
    for _ in range(300):
        gauge.observe(1.5)
    assert gauge.value == pytest.approx(1.5, rel=0.01)
    limit = inflight.InFlightLimit(100, gauge, ceiling=500)
    assert limit.cap() == 100 * 1.5 * inflight.HEADROOM + inflight.SPARE


def test_the_latency_tail_is_the_99th_percentile_of_the_last_calls():
    gauge = inflight.LatencyGauge(0.5)
    for seconds in [0.2] * 990 + [3.0] * 10:
        gauge.observe(seconds)
    assert gauge.tail() == 3.0  # the last 512 calls hold the 10 slow ones: 2 %
    for _ in range(512):
        gauge.observe(0.2)
    assert gauge.tail() == 0.2


def test_a_throttled_answer_cuts_the_cap_pauses_and_successes_raise_it_back():
    limit = inflight.InFlightLimit(UNTHROTTLED, inflight.LatencyGauge(0.3), ceiling=100)
    assert limit.cap() == 100
    limit.throttled(in_flight=60)
    assert limit.cap() == 0  # a short pause first
    limit.paused_until = 0.0
    assert limit.cap() == int(60 * inflight.CUT)
    for _ in range(10_000):  # one more per cap's worth of answers
        limit.answered()
    assert limit.cap() == 100


def test_the_provider_never_sees_more_requests_at_once_than_the_cap(fake, settings):
    settings.DELIVERY_MAX_IN_FLIGHT_PER_SENDER = 8
    fake.latency = Latency.fixed(0.15)
    campaign = make_campaign(phones=phones(40), mps=UNTHROTTLED)
    run = services.campaign_launch(campaign)
    run_to_the_end(run.pk)
    stats = fake.stats()
    assert stats["requests"] == 40
    assert stats["max_concurrent"] == 8
    assert_counts_match_recount(run)


def test_throttled_sends_lower_the_cap_and_are_sent_again_once(fake, settings):
    settings.DELIVERY_MAX_IN_FLIGHT_PER_SENDER = 20
    numbers = phones(30)
    for phone in numbers[:5]:
        fake.fail(phone, "429")
    campaign = make_campaign(phones=numbers, mps=UNTHROTTLED)
    run = services.campaign_launch(campaign)
    run_dispatcher = dispatcher.RunDispatcher(run.pk)
    run_dispatcher.batch()
    run_dispatcher.drain()
    assert run_dispatcher.pipeline.limit.allowed < 20
    run_dispatcher.close()
    delivery.drain(run, hurry_retries=True)
    assert [fake.stats()["created_by_recipient"].get(phone) for phone in numbers] == [1] * 30
    assert fake.stats()["errors"] == {"429": 5}
    assert_counts_match_recount(run)
    assert CampaignRun.objects.get(pk=run.pk).sent == 30


# --- A slow answer holds nothing up ------------------------------------------------------------


def test_a_stalled_request_does_not_hold_up_the_batches_after_it(fake, monkeypatch):
    monkeypatch.setattr(dispatch, "batch_size", lambda mps: 10)
    fake.timeout_sleep = 4.0  # the stalled request answers after 4 s (inside the read timeout)
    numbers = phones(40)
    fake.fail(numbers[0], "timeout")
    campaign = make_campaign(phones=numbers, mps=UNTHROTTLED)
    run = services.campaign_launch(campaign)
    monkeypatch.setattr("django.conf.settings.TWILIO_READ_TIMEOUT", 8.0)
    run_dispatcher = dispatcher.RunDispatcher(run.pk)
    for _ in range(4):  # the batch holding the stalled request, and the three after it
        assert run_dispatcher.batch()[1] == 0.0
    deadline = time.monotonic() + 3
    while fake.stats()["requests"] < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Every batch went out while the first request was still unanswered.
    assert fake.stats()["requests"] == 40
    assert fake.stats()["errors"] == {"timeout": 1} and fake.requests_to(numbers[0]) == 1
    arrivals = fake.arrival_times()
    assert max(arrivals) - min(arrivals) < fake.timeout_sleep
    run_dispatcher.close()
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert (run.status, run.sent) == ("completed", 40)


def test_pacing_holds_at_the_providers_latency(fake):
    """At 300 ms a sender of 10 MPS keeps its rate without ever passing 10 in a second at the provider."""
    fake.latency = Latency.fixed(0.3)
    numbers = phones(30)
    campaign = make_campaign(phones=numbers, mps=10)
    run = services.campaign_launch(campaign)
    run_to_the_end(run.pk)
    arrivals = fake.arrival_times()
    assert len(arrivals) == 30
    assert max_in_any_window(arrivals) <= 10
    run.refresh_from_db()
    assert (run.status, run.sent) == ("completed", 30)


# --- The dry run's estimate -------------------------------------------------------------------


def test_the_dry_runs_estimate_uses_the_pacing_windows_and_the_latency_observed(fake):
    campaign = make_campaign(phones=phones(5), mps=2)
    inflight.latency_forget(campaign.sender_id)
    guessed = services.campaign_dry_run(campaign)["estimated_seconds"]
    gauge = inflight.LatencyGauge(1.0)
    for seconds in [1.0] * 95 + [2.5] * 5:
        gauge.observe(seconds)
    inflight.latency_publish(campaign.sender_id, gauge)
    observed = services.campaign_dry_run(campaign)["estimated_seconds"]
    # Five at 2 MPS: three windows, two waits of 1.03 s; then the last answer, at the latency's p99
    # (guessed at 4 x 0.5 s before any was measured).
    assert observed - guessed == pytest.approx(2.5 - 2.0, abs=0.15)
    assert 2.06 + 2.5 <= observed <= 2.06 + 2.5 + 0.6
    inflight.latency_forget(campaign.sender_id)


def test_the_answers_are_written_as_they_come_while_sending_continues(fake, monkeypatch):
    """The recorder writes answers during the run, not only at its end: recipients move while later ones send."""
    monkeypatch.setattr(dispatch, "batch_size", lambda mps: 5)
    fake.latency = Latency.fixed(0.05)
    numbers = phones(20)
    campaign = make_campaign(phones=numbers, mps=5)
    run = services.campaign_launch(campaign)
    seen_sent_while_running = []
    original = send_batch.SendPipeline.flush_if_due

    def watching(self, available=float("inf")):
        original(self, available)
        seen_sent_while_running.append(Message.objects.filter(provider_sid__isnull=False).count())

    monkeypatch.setattr(send_batch.SendPipeline, "flush_if_due", watching)
    run_to_the_end(run.pk)
    assert any(0 < seen < 20 for seen in seen_sent_while_running)
    run.refresh_from_db()
    assert (run.status, run.sent) == ("completed", 20)


def test_a_run_held_back_by_the_platform_not_its_mps_teaches_the_estimate_the_platforms_rate(fake, monkeypatch):
    monkeypatch.setattr(estimates, "CAPACITY_MIN_RUN", 10)
    inflight._redis().delete(inflight.CAPACITY_KEY)
    campaign = make_campaign(phones=phones(30), mps=UNTHROTTLED)
    run = services.campaign_launch(campaign)
    run_to_the_end(run.pk)
    run.refresh_from_db()
    assert run.status == "completed"
    learned = float(inflight._redis().get(inflight.CAPACITY_KEY))
    assert 0 < learned < UNTHROTTLED / 2  # measured from the run's sends, not its limit
    inflight._redis().delete(inflight.CAPACITY_KEY)
