"""Global per-sender pacing through Redis, and dispatchers running side by side."""

import bisect
import threading
import time

import pytest
from django.db import connection
from django.db.models import Count

from campaigns import pacing, services
from campaigns.models import Recipient
from campaigns.services import dispatch
from messaging.models import Message
from tests import delivery
from tests.delivery import assert_counts_match_recount, make_campaign

fake = delivery.fake  # the fake Twilio server fixture


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any half-open window [t, t + window)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def take_tokens(sender_id: int, mps: int, seconds: float, slots: list, walls: list) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        slot = pacing.slot_take(sender_id, mps)
        slots.append(slot.at_us / 1_000_000)
        walls.append(time.time())


def test_max_in_any_window_counts_half_open_windows():
    assert max_in_any_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_in_any_window([]) == 0


def test_two_workers_sharing_a_sender_never_exceed_its_mps_together():
    sender_id, mps, seconds = 990_001, 20, 2.5
    pacing.pacing_reset(sender_id)
    slots, walls = [], []
    workers = [threading.Thread(target=take_tokens, args=(sender_id, mps, seconds, slots, walls)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert max_in_any_window(slots) <= mps
    assert max_in_any_window(walls) <= mps
    # Paced, not starved: the two together get close to the sender's rate.
    assert len(slots) >= mps * seconds * 0.9


def test_a_slot_too_far_ahead_is_not_reserved():
    sender_id = 990_002
    pacing.pacing_reset(sender_id)
    granted = [pacing.slot_reserve(sender_id, 2, max_ahead=1.2) for _ in range(4)]
    assert [slot.granted for slot in granted] == [True, True, True, False]
    assert granted[3].wait > 0


def test_unthrottled_takes_no_token():
    assert pacing.slot_take(990_003, 0).granted


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_on_one_run_keep_the_pace_and_send_each_recipient_once(fake):
    phones = [f"+2547140000{n:02d}" for n in range(30)]
    mps = 10
    run = services.campaign_launch(make_campaign(phones=phones, mps=mps))
    errors = []

    def dispatcher():
        try:
            while dispatch.run_dispatch_batch(run.pk)[1] is not None:
                pass
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    assert errors == []
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)
    sent_times = [m.sending_at.timestamp() for m in Message.objects.all()]
    assert max_in_any_window(sent_times) <= mps
    assert elapsed >= (len(phones) - 1) / mps * 0.95
    assert dict(Recipient.objects.values_list("state").annotate(n=Count("pk"))) == {"sent": len(phones)}
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert run.status == "completed"
