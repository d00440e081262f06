"""Prices are fetched from Twilio (the fake server, through the official client) after a message's final status.

Once, paced under a shared rate, retried on 429/5xx with backoff, given up after a bound with the
reason; never for simulated senders, whose provider prices each message at send.
"""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from messaging.models import Message, MessageStatus, Sender
from messaging.pricing import fetch
from messaging.pricing.pace import Pace
from messaging.services import create, send
from tests import delivery
from tests.factories import ContactFactory

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db

KE = "+254713000001"  # Kenya: 0.1290 USD a segment at the fake
GB = "+447700900123"  # United Kingdom: 0.0524


class VirtualTime:
    """A clock the pace sleeps on without waiting: time only moves when it sleeps."""

    def __init__(self):
        self.now = time.time() * 1000  # far from any other test's windows in Redis
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


class RecordingPace(Pace):
    """The pace, noting the (virtual) second each request was let through in."""

    def __init__(self, rate: float, virtual: VirtualTime):
        super().__init__(rate, clock=virtual.clock, sleep=virtual.sleep)
        self.seconds: list[int] = []

    def wait(self) -> None:
        super().wait()
        self.seconds.append(int(self.clock()))


def _pace(rate: float = 1000.0) -> tuple[RecordingPace, VirtualTime]:
    virtual = VirtualTime()
    return RecordingPace(rate, virtual), virtual


def _twilio_sender() -> Sender:
    fields = {"channel": "sms", "kind": "long_code", "provider": "twilio", "from_address": "+15005550006"}
    return Sender.objects.get_or_create(name="sms", defaults=fields)[0]


def _sent(phone: str = KE, body: str = "Hi there", sender: Sender | None = None) -> Message:
    message, _ = create.message_create(
        contact=ContactFactory(phone=phone), sender=sender or _twilio_sender(), body=body, enqueue=False
    )
    message = send.message_send(message.pk)
    assert message.provider_sid and message.price is None  # Twilio's create answer has no price
    return message


def _final(fake, message: Message, status: str = "delivered", *, ago: timedelta = timedelta(minutes=10)) -> None:
    """The message reached its final status ``ago`` (at the fake and here)."""
    fake.settle(message.provider_sid, status)
    Message.objects.filter(pk=message.pk).update(status=status, updated_at=timezone.now() - ago)


def test_the_price_is_fetched_once_after_the_final_status(fake):
    message = _sent()
    pace, _ = _pace()
    assert fetch.message_prices_fetch(pace=pace) == {}  # still "queued": not asked
    assert fake.fetches() == {}

    _final(fake, message)
    assert fetch.message_prices_fetch(pace=pace) == {"priced": 1}
    message.refresh_from_db()
    assert (message.price, message.price_unit, message.price_error) == (Decimal("0.12900"), "USD", "")

    assert fetch.message_prices_fetch(pace=pace) == {}  # a second run asks nothing
    assert fake.fetches() == {message.provider_sid: 1}


def test_a_two_segment_message_costs_two_segments(fake):
    message = _sent(phone=GB, body="x" * 161)
    _final(fake, message, "undelivered")
    fetch.message_prices_fetch(pace=_pace()[0])
    message.refresh_from_db()
    assert (message.segments, message.price) == (2, Decimal("0.10480"))


def test_a_message_final_only_moments_ago_waits_for_the_delay(fake, settings):
    settings.PRICE_FETCH_DELAY_SECONDS = 120
    message = _sent()
    _final(fake, message, ago=timedelta(seconds=5))
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {}
    assert fake.fetches() == {}


def test_two_runs_at_once_never_take_the_same_message(fake):
    for n in range(3):
        _final(fake, _sent(phone=f"+25471300000{n}"))
    now = timezone.now()
    first = fetch.message_prices_claim(now, 2)
    second = fetch.message_prices_claim(now, 10)
    assert len(first) == 2 and len(second) == 1
    assert not {row[0] for row in first} & {row[0] for row in second}
    assert fetch.message_prices_claim(now, 10) == []  # leased until LEASE has passed


@pytest.mark.parametrize("error", ["429", "500", "503"])
def test_a_refusal_or_server_error_is_retried_after_a_backoff(fake, error):
    message = _sent()
    _final(fake, message)
    fake.fail_fetch(message.provider_sid, error)
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {"retry": 1}
    message.refresh_from_db()
    assert message.price is None and message.price_attempts == 1
    assert message.price_next_at > timezone.now() + timedelta(seconds=40)  # 60 s, +-20 %

    assert fetch.message_prices_fetch(pace=_pace()[0]) == {}  # not due yet
    later = timezone.now() + timedelta(minutes=2)
    assert fetch.message_prices_fetch(now=later, pace=_pace()[0]) == {"priced": 1}
    message.refresh_from_db()
    assert message.price == Decimal("0.12900")
    assert fake.fetches() == {message.provider_sid: 2}


def test_a_429_hands_the_rest_of_the_batch_back(fake):
    messages = [_sent(phone=f"+25471300001{n}") for n in range(3)]
    for message in messages:
        _final(fake, message)
    first = Message.objects.filter(pk__in=[m.pk for m in messages]).order_by("updated_at").first()
    fake.fail_fetch(first.provider_sid, "429")
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {"retry": 1, "handed_back": 2}
    assert sum(fake.fetches().values()) == 1  # nobody else was asked in that run


def test_a_price_never_filled_in_is_given_up_after_the_bound_with_the_reason(fake, settings):
    settings.PRICE_FETCH_MAX_ATTEMPTS = 3
    message = _sent()
    fake.withhold_price(message.provider_sid)
    _final(fake, message, "failed")
    now = timezone.now()
    outcomes = []
    for hours in range(4):
        outcomes.append(fetch.message_prices_fetch(now=now + timedelta(hours=hours), pace=_pace()[0]))
    assert outcomes == [{"retry": 1}, {"retry": 1}, {"given_up": 1}, {}]
    message.refresh_from_db()
    assert message.price is None and message.price_attempts == 3
    assert message.price_error == "no price after 3 tries: the provider has not priced it"
    assert fake.fetches() == {message.provider_sid: 3}


def test_a_message_the_provider_does_not_know_is_given_up_at_once(fake):
    message = _sent()
    _final(fake, message)
    Message.objects.filter(pk=message.pk).update(provider_sid="SM" + "0" * 32)
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {"given_up": 1}
    message.refresh_from_db()
    assert message.price_error.startswith("provider error 20404")


def test_requests_keep_to_the_rate_as_the_fake_sees_them(fake):
    for n in range(7):
        _final(fake, _sent(phone=f"+25471300002{n}"))
    pace, virtual = _pace(rate=2)
    assert fetch.message_prices_fetch(pace=pace) == {"priced": 7}
    assert sum(fake.fetches().values()) == len(pace.seconds) == 7
    # 7 requests at 2 a second: 2, 2, 2 and 1 in four successive seconds (waited for, none of it real).
    per_second = [pace.seconds.count(second) for second in sorted(set(pace.seconds))]
    assert per_second == [2, 2, 2, 1]
    assert virtual.slept >= 2.0


def test_the_batch_bounds_one_run(fake, settings):
    settings.PRICE_FETCH_BATCH = 2
    for n in range(5):
        _final(fake, _sent(phone=f"+25471300003{n}"))
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {"priced": 2}
    assert sum(fake.fetches().values()) == 2


def test_two_workers_share_one_rate():
    virtual = VirtualTime()
    workers = [RecordingPace(3, virtual) for _ in range(2)]
    for _ in range(6):
        for worker in workers:
            worker.wait()
    seconds = workers[0].seconds + workers[1].seconds
    assert [seconds.count(second) for second in sorted(set(seconds))] == [3, 3, 3, 3]


def test_a_simulated_sender_is_priced_at_send_and_never_asked(fake):
    sender = Sender.objects.create(
        name="sim", channel="sms", kind="long_code", provider="simulated", from_address="+15005550007"
    )
    message, _ = create.message_create(contact=ContactFactory(phone=KE), sender=sender, body="Hi", enqueue=False)
    message = send.message_send(message.pk)
    assert (message.price, message.price_unit) == (Decimal("0.12900"), "USD")
    Message.objects.filter(pk=message.pk).update(
        status=MessageStatus.DELIVERED, price=None, updated_at=timezone.now() - timedelta(hours=1)
    )
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {}
    assert fake.fetches() == {}


def test_the_embedded_simulated_mode_asks_nothing(fake, settings):
    message = _sent()
    _final(fake, message)
    settings.MESSAGING_PROVIDER = "simulated"
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {}
    assert fake.fetches() == {}


def test_logs_name_no_phone_number(fake, caplog):
    message = _sent()
    _final(fake, message)
    fake.fail_fetch(message.provider_sid, "500", times=10)
    with caplog.at_level("DEBUG"):
        fetch.message_prices_fetch(pace=_pace()[0])
    assert caplog.records and KE not in caplog.text and KE[1:] not in caplog.text


def test_a_message_left_sent_is_priced_after_the_longer_delay_and_not_before(fake, settings):
    settings.PRICE_FETCH_DELAY_SECONDS = 120
    settings.PRICE_FETCH_SENT_AFTER_SECONDS = 3600
    message = _sent()
    _final(fake, message, "sent", ago=timedelta(minutes=30))  # no delivery receipt came
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {}  # past the final delay, not the sent one
    assert fake.fetches() == {}

    Message.objects.filter(pk=message.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {"priced": 1}
    message.refresh_from_db()
    assert (message.status, message.price, message.price_unit) == (MessageStatus.SENT, Decimal("0.12900"), "USD")
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {}  # priced once
    assert fake.fetches() == {message.provider_sid: 1}


def test_a_message_not_yet_sent_is_never_asked_however_old(fake, settings):
    settings.PRICE_FETCH_SENT_AFTER_SECONDS = 0
    message = _sent()
    for status in (MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.UNKNOWN):
        Message.objects.filter(pk=message.pk).update(status=status, updated_at=timezone.now() - timedelta(days=3))
        assert fetch.message_prices_fetch(pace=_pace()[0]) == {}
    assert fake.fetches() == {}


def test_the_due_query_can_use_the_partial_index(fake):
    query = Message.objects.filter(fetch._due(timezone.now())).order_by("updated_at").values("pk")[:100]
    sql, params = query.query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a near-empty table: make the planner show its index
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "message_price_due_or_sent" in plan, plan
