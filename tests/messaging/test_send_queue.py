"""Transactional sends queued in Redis per sender after commit, sent in paced batches (messaging.services.send_queue).

Through the real twilio client against the fake Twilio server; a real Celery worker process for the
end-to-end case. Checked: every message leaves exactly once, whatever took its id (a drain, two
drains, the sweep after a worker lost it); a send with Redis unreachable still goes; no second at
Twilio holds more than the sender's MPS, campaign sends on the sender included; a slow sender's
backlog neither holds a worker thread past its round nor delays another sender.
"""

import bisect
import itertools
import signal
import threading
import time
from datetime import timedelta
from unittest import mock

import pytest
import redis
from django.db import connection
from django.utils import timezone

from config import observe
from config.celery import app as celery_app
from messaging import pacing, tasks
from messaging.models import Message, MessageStatus, Sender
from messaging.services import reconcile, send, send_outcomes, send_queue
from tests import delivery
from tests.delivery import free_port
from tests.factories import ContactFactory
from tests.nodes import WorkerNode, wait_for

fake = delivery.fake  # the fake Twilio server fixture
# As in production: the send is queued once committed. A transactional test starts after a flush: the
# role groups are made again.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("roles")]


def _forget(client) -> None:
    keys = [*client.scan_iter("messages:send:*"), *client.scan_iter("pace:*")]
    if keys:
        client.delete(*keys)


@pytest.fixture
def queue():
    client = observe.redis_client()
    _forget(client)
    yield client
    _forget(client)


@pytest.fixture
def sender():
    return Sender.objects.create(
        name="otp", channel="sms", kind="long_code", provider="twilio", from_address="+15005550006", mps=1000
    )


def _phones(count: int, start: int = 0) -> list[str]:
    return [f"+2547113{start + n:05d}" for n in range(count)]


def _post_all(staff_api, phones: list[str]) -> list[int]:
    ids = []
    for n, phone in enumerate(phones):
        contact = ContactFactory(phone=phone)
        answer = staff_api.post(
            "/api/v1/messages/", {"contact": contact.pk, "body": f"code {n}"}, format="json", HTTP_IDEMPOTENCY_KEY=phone
        )
        assert answer.status_code == 202, answer.content
        ids.append(answer.json()["id"])
    return ids


def _queued(client, sender: Sender) -> list[int]:
    return [int(value) for value in client.zrange(send_queue.queue_key(sender.pk), 0, -1)]


def test_committed_messages_are_queued_and_one_drain_sends_each_once(staff_api, sender, fake, queue):
    phones = _phones(12)
    with mock.patch("messaging.tasks.messages_send_queued.delay") as wake:
        ids = _post_all(staff_api, phones)
    assert _queued(queue, sender) == ids  # in commit order, none sent yet
    wake.assert_called_once_with()  # the first woke a drain; the others found it queued
    assert queue.smembers(send_queue.READY_KEY) == {str(sender.pk).encode()}
    assert not Message.objects.exclude(status=MessageStatus.PENDING).filter(pk__in=ids).exists()

    assert send_queue.send_queue_drain() == len(ids)
    assert _queued(queue, sender) == [] and not queue.exists(send_queue.KICK_KEY)
    assert not queue.exists(send_queue.READY_KEY)  # left with the last ids
    assert set(Message.objects.filter(pk__in=ids).values_list("status", flat=True)) == {MessageStatus.QUEUED}
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)


def test_an_id_taken_twice_or_by_two_drains_is_sent_once(staff_api, sender, fake, queue):
    phones = _phones(5, start=100)
    with mock.patch("messaging.tasks.messages_send_queued.delay"):
        ids = _post_all(staff_api, phones)
    queue.zadd(send_queue.queue_key(sender.pk), {pk: pk for pk in ids})  # the sweep queued them again meanwhile
    send_queue.send_queue_drain()
    queue.zadd(send_queue.queue_key(sender.pk), {pk: pk for pk in ids})  # a replayed kick after they left
    send_queue.send_queue_drain(helper=True)
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)
    assert Message.objects.filter(pk__in=ids, status=MessageStatus.QUEUED).count() == len(ids)


def test_a_message_whose_id_a_dead_worker_took_is_sent_by_the_sweep(staff_api, sender, fake, queue):
    phones = _phones(3, start=200)
    with mock.patch("messaging.tasks.messages_send_queued.delay"):
        ids = _post_all(staff_api, phones)
    assert queue.zpopmin(send_queue.queue_key(sender.pk), 10)  # taken by a worker that was then killed: gone
    assert send.messages_send_due() == 0  # too young: its drain may still be on its way
    Message.objects.filter(pk__in=ids).update(created_at=timezone.now() - timedelta(minutes=2))
    with mock.patch("messaging.tasks.messages_send_queued.delay"):
        assert send.messages_send_due() == len(ids)  # queued again, after commit
    assert _queued(queue, sender) == sorted(ids)
    with mock.patch("messaging.tasks.messages_send_queued.delay"):
        assert send.messages_send_due() == len(ids)  # the sweep again, before a drain ran: held once
    assert _queued(queue, sender) == sorted(ids)
    send_queue.send_queue_drain()
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)


def test_with_redis_unreachable_a_message_gets_a_task_of_its_own(staff_api, sender, queue, settings):
    unreachable = redis.Redis(host="127.0.0.1", port=free_port(), socket_timeout=0.2, socket_connect_timeout=0.2)
    contact = ContactFactory(phone="+254711300999")
    with (
        mock.patch.object(observe, "redis_client", return_value=unreachable),
        mock.patch("messaging.tasks.message_send.delay") as task,
    ):
        answer = staff_api.post("/api/v1/messages/", {"contact": contact.pk, "body": "code"}, format="json")
    assert answer.status_code == 202
    task.assert_called_once_with(answer.json()["id"])


def test_a_drain_lingers_for_a_message_committed_while_it_runs(staff_api, sender, fake, queue, monkeypatch):
    """An id pushed after the drain deleted its kick wakes a new drain, and the lingering one sends it."""
    monkeypatch.setattr(send_queue, "LINGER", 5.0)
    queue.set(send_queue.KICK_KEY, 1)  # a drain is queued and has not started
    first = _phones(1, start=300)[0]
    taken = []

    def drain():
        try:
            taken.append(send_queue.send_queue_drain())
        finally:
            connection.close()

    with mock.patch("messaging.tasks.messages_send_queued.delay") as wake:
        _post_all(staff_api, [first])
        assert wake.call_count == 0  # the queued drain will see it
        thread = threading.Thread(target=drain)
        thread.start()
        deadline = time.monotonic() + 10
        while fake.requests_to(first) == 0 and time.monotonic() < deadline:  # the drain started and sent it
            time.sleep(0.01)
        late = _phones(1, start=301)[0]
        _post_all(staff_api, [late])
        thread.join(timeout=30)
    assert wake.call_count == 1  # the late one woke a drain of its own (the key was gone) ...
    assert taken == [2]  # ... but the lingering drain had already sent it
    assert (fake.requests_to(first), fake.requests_to(late)) == (1, 1)


def test_after_a_short_batch_the_drain_lets_the_next_gather(queue, monkeypatch):
    """A trickle is sent a few at a time: each short batch is followed by a GATHER pause, a full one is not."""
    monkeypatch.setattr(send_queue, "LINGER", 0.0)
    monkeypatch.setattr(send_queue, "BATCH", 3)
    queue.zadd(send_queue.queue_key(0), {n: n for n in range(1, 6)})  # a full batch of 3, then a short one of 2
    queue.sadd(send_queue.READY_KEY, 0)
    pauses, batches = [], []

    def batch_send(pipeline, ids, pace):
        batches.append(ids)
        return []

    with (
        mock.patch.object(send_queue.SendPipeline, "send", batch_send),
        mock.patch.object(send_queue.time, "sleep", pauses.append),
        mock.patch.object(send_queue, "_helper_wake"),
    ):
        assert send_queue.send_queue_drain() == 5
    assert batches == [[1, 2, 3], [4, 5]]
    assert pauses == [send_queue.GATHER]


def _most_in_a_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def _slow_sender(mps: int, number: str = "+15005550007") -> Sender:
    return Sender.objects.create(
        name=f"slow {mps}", channel="sms", kind="long_code", provider="twilio", from_address=number, mps=mps
    )


def test_a_senders_queue_leaves_at_its_mps_sharing_the_pace_with_campaign_sends(staff_api, fake, queue, monkeypatch):
    """A campaign took the sender's whole second just before: the queued messages wait for the next one."""
    monkeypatch.setattr(send_queue, "ROUND_SECONDS", 30.0)
    slow = _slow_sender(5)
    phones = _phones(12, start=600)
    with mock.patch("messaging.tasks.messages_send_queued.delay"):
        ids = [
            staff_api.post(
                "/api/v1/messages/",
                {"contact": ContactFactory(phone=phone).pk, "body": "code", "sender": slow.pk},
                format="json",
            ).json()["id"]
            for phone in phones
        ]
    campaign = []
    for _ in range(5):  # as a dispatcher on the same sender does
        assert pacing.slot_take(slow.pk, 5) is not None
        campaign.append(time.time())
    began = time.monotonic()
    assert send_queue.send_queue_drain() == len(ids)
    elapsed = time.monotonic() - began
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)
    arrivals = fake.arrival_times()
    assert _most_in_a_window([*campaign, *arrivals], 1.0 - pacing.SLACK) <= 5
    assert min(arrivals) - min(campaign) >= 1.0 - pacing.SLACK  # the campaign's second was full
    # 17 sends at 5 a second: three windows after the campaign's burst.
    assert elapsed >= 3 * pacing.WINDOW * 0.9


def test_a_drain_gives_its_thread_back_after_a_round_and_wakes_the_next(staff_api, fake, queue, monkeypatch):
    monkeypatch.setattr(send_queue, "ROUND_SECONDS", 1.5)  # between the second window (1.03 s) and the third
    slow = _slow_sender(2)
    phones = _phones(6, start=700)
    with mock.patch("messaging.tasks.messages_send_queued.delay"):
        for phone in phones:
            contact = ContactFactory(phone=phone)
            staff_api.post("/api/v1/messages/", {"contact": contact.pk, "body": "hi", "sender": slow.pk}, format="json")
    began = time.monotonic()
    with mock.patch("messaging.tasks.messages_send_queued.delay") as wake:
        # Two at once, two a window later; then the round is over and two are left for the next drain.
        assert send_queue.send_queue_drain() == 4
    assert time.monotonic() - began < 2.5
    wake.assert_called_once_with()
    assert queue.zcard(send_queue.queue_key(slow.pk)) == 2 and queue.exists(send_queue.KICK_KEY)
    assert Message.objects.filter(status=MessageStatus.PENDING).count() == 2
    assert send_queue.send_queue_drain() == 2
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)
    assert _most_in_a_window(fake.arrival_times(), 1.0 - pacing.SLACK) <= 2


def test_one_drain_serves_every_sender_and_a_full_second_holds_back_only_its_own(
    staff_api, sender, fake, queue, monkeypatch
):
    """A 1-MPS sender with a backlog and 30 senders trickling one-time passwords: one drain sends
    each sender's as soon as its second allows, and the slow one's backlog at its MPS."""
    monkeypatch.setattr(send_queue, "LINGER", 0.3)
    slow = _slow_sender(1)
    backlog = _phones(3, start=800)
    others = [
        Sender.objects.create(
            name=f"brand {n}", channel="sms", kind="long_code", provider="twilio", from_address=f"+1500555{n:04d}"
        )
        for n in range(30)
    ]
    otps = _phones(len(others), start=850)
    with mock.patch("messaging.tasks.messages_send_queued.delay") as wake:
        for phone in backlog:
            contact = ContactFactory(phone=phone)
            staff_api.post("/api/v1/messages/", {"contact": contact.pk, "body": "hi", "sender": slow.pk}, format="json")
        for other, phone in zip(others, otps, strict=True):
            contact = ContactFactory(phone=phone)
            body = {"contact": contact.pk, "body": "otp", "sender": other.pk}
            staff_api.post("/api/v1/messages/", body, format="json")
    wake.assert_called_once_with()  # one drain for all 31 senders
    began = time.monotonic()
    assert send_queue.send_queue_drain() == len(backlog) + len(otps)
    assert time.monotonic() - began >= 2 * pacing.WINDOW * 0.9  # the backlog at 1 a second
    assert [fake.requests_to(phone) for phone in backlog + otps] == [1] * (len(backlog) + len(otps))
    arrived = fake.arrived_by_recipient()
    first = min(arrived.values())
    assert max(arrived[phone] for phone in otps) - first < 1.0  # none waited for the slow sender's seconds
    slow_times = sorted(arrived[phone] for phone in backlog)
    assert all(later - earlier >= 1.0 - pacing.SLACK for earlier, later in itertools.pairwise(slow_times))


def test_a_batch_the_pacing_gave_up_on_goes_back_into_the_queue_unsent(staff_api, sender, fake, queue):
    phones = _phones(3, start=950)
    with mock.patch("messaging.tasks.messages_send_queued.delay"):
        ids = _post_all(staff_api, phones)
    with (
        mock.patch.object(pacing, "pacer", return_value=lambda idle=None: False),  # Redis away past the give-up
        mock.patch("messaging.tasks.messages_send_queued.delay") as wake,
    ):
        assert send_queue.send_queue_drain() == 3
    wake.assert_called_once_with()  # the next drain tries again
    assert _queued(queue, sender) == ids
    assert Message.objects.filter(pk__in=ids, status=MessageStatus.PENDING).count() == 3
    assert fake.stats()["requests"] == 0
    send_queue.send_queue_drain()
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)


def test_a_retry_goes_back_into_its_senders_queue_when_its_time_comes(
    sender, queue, django_capture_on_commit_callbacks
):
    with (
        mock.patch("messaging.tasks.message_queue.apply_async") as later,
        django_capture_on_commit_callbacks(execute=True),
    ):
        send.message_enqueue(41, sender.pk, countdown=7)
    later.assert_called_once_with(args=[41, sender.pk], countdown=7)
    with mock.patch("messaging.tasks.messages_send_queued.delay") as wake:
        tasks.message_queue(41, sender.pk)
    assert _queued(queue, sender) == [41]
    wake.assert_called_once_with()


def _worker(fake, root, **env) -> WorkerNode:
    twilio = {
        "MESSAGING_PROVIDER": "twilio",
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": delivery.TOKEN,
        "TWILIO_API_BASE_URL": fake.base_url,
    }
    return WorkerNode(root, {**twilio, **env}).start()


def test_a_worker_process_sends_messages_posted_through_the_api(staff_api, sender, fake, queue, tmp_path):
    phones = _phones(20, start=400)
    celery_app.control.purge()  # tasks an earlier test left in the broker name rows that are gone
    node = _worker(fake, tmp_path)
    try:
        ids = _post_all(staff_api, phones)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not Message.objects.filter(pk__in=ids, status=MessageStatus.PENDING).exists():
                break
            time.sleep(0.2)
    finally:
        node.stop()
    assert Message.objects.filter(pk__in=ids, status=MessageStatus.QUEUED).count() == len(ids)
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)


def test_a_worker_killed_mid_drain_leaves_each_message_sent_exactly_once(staff_api, sender, fake, queue, tmp_path):
    """Killed with some sends answered, some in flight and the rest claimed but never sent: beat's
    reconciler adopts what Twilio holds, queues the rest again, and a new worker sends them."""
    fake.latency = 0.3
    phones = _phones(30, start=500)
    celery_app.control.purge()
    first = _worker(fake, tmp_path / "first", DELIVERY_MAX_IN_FLIGHT="3")
    try:
        ids = _post_all(staff_api, phones)
        wait_for(lambda: fake.stats()["requests"] >= 8)
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
    assert fake.stats()["requests"] < len(phones)  # killed mid-drain

    # What beat does once the claims are stale: ask Twilio about the sends without a sid; those it
    # never got go back to pending and are queued again, which wakes a drain on the new worker.
    past = timezone.now() - send_outcomes.STALE_SENDING_AFTER - timedelta(seconds=5)
    stale = Message.objects.filter(pk__in=ids, status=MessageStatus.SENDING, provider_sid__isnull=True)
    assert stale.exists()
    stale.update(claimed_at=past, sending_at=past)
    second = _worker(fake, tmp_path / "second")
    try:
        reconcile.messages_reconcile_stale()
        unsent = Message.objects.filter(pk__in=ids, status__in=[MessageStatus.PENDING, MessageStatus.SENDING])
        wait_for(lambda: not unsent.exists(), 90)
    finally:
        second.stop()
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)
    assert Message.objects.filter(pk__in=ids, status=MessageStatus.QUEUED).count() == len(phones)
