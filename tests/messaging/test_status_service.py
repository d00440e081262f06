"""Status callbacks: stored once, applied forward only, the same end state in any order."""

import threading
from datetime import timedelta
from itertools import permutations

import pytest
from django.db import connection
from django.utils import timezone

from messaging.models import Message, MessageStatus, ProviderCallback
from messaging.services.status import (
    UnknownStatus,
    status_callback_record,
    status_callbacks_apply_pending,
    status_callbacks_sweep,
)
from messaging.signals import message_status_changed
from tests.twilio_webhooks import SID, status_payload

pytestmark = pytest.mark.django_db

STAMPS = ("queued_at", "sending_at", "sent_at", "delivered_at", "read_at", "failed_at", "canceled_at")


def make_message(sid: str | None = SID, status: str = MessageStatus.QUEUED) -> Message:
    return Message.objects.create(channel="sms", to_address="+254712345678", provider_sid=sid, status=status)


def record(sid: str, status: str, error_code: str = "") -> bool:
    return status_callback_record(
        provider_sid=sid,
        status=status,
        error_code=error_code,
        payload=status_payload(sid, status, error_code=error_code),
    )


def state(message: Message) -> tuple:
    message.refresh_from_db()
    return (message.status, message.error_code, message.error_message, *(bool(getattr(message, s)) for s in STAMPS))


def test_statuses_move_forward_and_stamp_each_status_reached():
    message = make_message()
    for status in ("sent", "delivered", "read"):
        assert record(SID, status) is True
    message.refresh_from_db()
    assert message.status == MessageStatus.READ
    assert message.sent_at <= message.delivered_at <= message.read_at
    assert set(ProviderCallback.objects.filter(message=message).values_list("status", flat=True)) == {
        "sent",
        "delivered",
        "read",
    }
    assert not ProviderCallback.objects.filter(applied_at__isnull=True).exists()


def test_a_replayed_callback_stores_nothing_and_changes_nothing():
    message = make_message()
    assert record(SID, "delivered") is True
    before = state(message)
    message.refresh_from_db()
    updated_at = message.updated_at
    assert record(SID, "delivered") is False
    assert ProviderCallback.objects.count() == 1
    assert state(message) == before
    assert message.updated_at == updated_at


def test_a_late_lower_status_keeps_the_status_but_fills_its_timestamp():
    message = make_message()
    record(SID, "delivered")
    record(SID, "sent")
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert message.sent_at is not None


def test_a_failure_is_final_and_carries_the_error():
    message = make_message()
    record(SID, "sent")
    record(SID, "undelivered", "30003")
    record(SID, "delivered")
    message.refresh_from_db()
    assert message.status == MessageStatus.UNDELIVERED
    assert message.error_code == "30003"
    assert message.error_message == "Unreachable destination handset"
    assert message.failed_at is not None and message.delivered_at is not None


def test_twilio_names_map_to_ours():
    message = make_message(status=MessageStatus.SENDING)
    record(SID, "accepted")  # queued is below sending: nothing moves, queued_at is stamped
    assert state(message)[0] == MessageStatus.SENDING
    record(SID, "partially_delivered")
    assert state(message)[0] == MessageStatus.DELIVERED


def test_an_unknown_status_is_refused_before_anything_is_stored():
    make_message()
    with pytest.raises(UnknownStatus):
        record(SID, "teleported")
    assert not ProviderCallback.objects.exists()


def test_received_and_skipped_messages_are_never_moved_by_callbacks():
    inbound = make_message(status=MessageStatus.RECEIVED)
    record(SID, "delivered")
    assert state(inbound)[0] == MessageStatus.RECEIVED


SEQUENCES = [
    [("sent", ""), ("delivered", ""), ("read", "")],
    [("queued", ""), ("sent", ""), ("undelivered", "30003")],
    [("sent", ""), ("delivered", ""), ("failed", "30008")],
    [("read", ""), ("failed", "63016"), ("undelivered", "30003")],
    [("accepted", ""), ("scheduled", ""), ("canceled", "")],
]


@pytest.mark.parametrize("sequence", SEQUENCES, ids=lambda seq: "-".join(s for s, _ in seq))
def test_any_order_with_duplicates_ends_in_the_in_order_state(sequence):
    expected_message = make_message("SM" + "ee" * 16)
    for status, code in sequence:
        record(expected_message.provider_sid, status, code)
    expected = state(expected_message)
    for index, order in enumerate(permutations(sequence + sequence[:1])):
        message = make_message(f"SM{index:032d}")
        for status, code in order:
            record(message.provider_sid, status, code)
        assert state(message) == expected, order


def test_a_callback_before_the_sid_is_saved_waits_then_applies():
    message = make_message(sid=None)
    record(SID, "delivered")
    record(SID, "sent")
    event = ProviderCallback.objects.get(status="delivered")
    assert event.applied_at is None and event.message_id is None
    assert state(message)[0] == MessageStatus.QUEUED

    message.provider_sid = SID
    message.save(update_fields=["provider_sid"])
    assert status_callbacks_apply_pending(message) == 2
    assert message.status == MessageStatus.DELIVERED  # the instance is refreshed
    assert message.sent_at is not None and message.delivered_at is not None
    assert set(ProviderCallback.objects.values_list("message_id", flat=True)) == {message.pk}
    assert not ProviderCallback.objects.filter(applied_at__isnull=True).exists()
    assert status_callbacks_apply_pending(message) == 0


def test_waiting_events_end_in_the_same_state_as_live_ones():
    live = make_message("SM" + "11" * 16)
    waiting = make_message(sid=None)
    for status, code in [("failed", "30008"), ("sent", ""), ("delivered", "")]:
        record(live.provider_sid, status, code)
        record(SID, status, code)
    waiting.provider_sid = SID
    waiting.save(update_fields=["provider_sid"])
    status_callbacks_apply_pending(waiting)
    assert state(waiting) == state(live)


def test_the_sweep_applies_events_that_raced_with_the_sid_save():
    message = make_message(sid=None)
    record(SID, "delivered")
    record("SM" + "99" * 16, "sent")  # a sid we never sent: stays pending, harmless
    Message.objects.filter(pk=message.pk).update(provider_sid=SID)
    assert status_callbacks_sweep(older_than_seconds=60) == 0  # too recent
    ProviderCallback.objects.update(received_at=timezone.now() - timedelta(minutes=2))
    assert status_callbacks_sweep(older_than_seconds=60) == 1
    assert state(message)[0] == MessageStatus.DELIVERED
    assert ProviderCallback.objects.filter(applied_at__isnull=True).count() == 1


def test_a_status_change_is_signalled_after_commit(django_capture_on_commit_callbacks):
    message = make_message()
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    message_status_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            record(SID, "delivered")
            record(SID, "sent")  # no change of status: no signal
            record(SID, "delivered")  # replay: no signal
            assert received == []  # nothing before commit
    finally:
        message_status_changed.disconnect(receiver)
    assert [(r["message_id"], r["old"], r["new"]) for r in received] == [(message.pk, "queued", "delivered")]


def test_the_sweep_runs_on_a_beat_schedule():
    from django_celery_beat.models import PeriodicTask

    from config.celery import app

    periodic = PeriodicTask.objects.get(name="messaging: apply pending status callbacks")
    assert periodic.task == "messaging.status_callbacks_sweep" and periodic.enabled
    assert periodic.interval.every == 30
    app.loader.import_default_modules()
    message = make_message(sid=None)
    record(SID, "sent")
    Message.objects.filter(pk=message.pk).update(provider_sid=SID)
    ProviderCallback.objects.update(received_at=timezone.now() - timedelta(minutes=1))
    assert app.tasks[periodic.task].apply().get() == 1
    assert state(message)[0] == MessageStatus.SENT


CONCURRENT_SEQUENCE = [("sent", ""), ("delivered", ""), ("read", ""), ("sent", ""), ("delivered", "")]


def fire_together(calls: list[tuple[str, str, str]]) -> None:
    barrier = threading.Barrier(len(calls))
    errors = []

    def run(sid: str, status: str, code: str) -> None:
        try:
            barrier.wait()
            status_callback_record(
                provider_sid=sid, status=status, error_code=code, payload=status_payload(sid, status, error_code=code)
            )
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_callbacks_end_in_the_in_order_state_and_signal_each_step_once():
    changes = []

    def receiver(sender, message_id, old, new, **kwargs):
        changes.append((message_id, old, new))

    message_status_changed.connect(receiver)
    try:
        messages = [
            Message.objects.create(channel="whatsapp", provider_sid=f"SM{n:032x}", status=MessageStatus.QUEUED)
            for n in range(12)
        ]
        for message in messages:
            fire_together([(message.provider_sid, status, code) for status, code in CONCURRENT_SEQUENCE])
    finally:
        message_status_changed.disconnect(receiver)
    for message in messages:
        message.refresh_from_db()
        assert message.status == MessageStatus.READ
        assert message.sent_at and message.delivered_at and message.read_at
        assert ProviderCallback.objects.filter(message=message, applied_at__isnull=False).count() == 3
        # The (old, new) pairs reported chain up exactly from queued to read, whatever the interleaving
        # (threads may report in another order than they committed, hence the walk).
        steps = dict((old, new) for message_id, old, new in changes if message_id == message.pk)
        assert len(steps) == len([c for c in changes if c[0] == message.pk])
        walk, status = [], "queued"
        while status in steps:
            status = steps[status]
            walk.append(status)
        assert walk[-1] == "read" and len(walk) == len(steps)
