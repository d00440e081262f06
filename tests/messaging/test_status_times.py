"""Status times follow the statuses' meaning, whatever order the callbacks arrive in.

sent_at <= delivered_at <= read_at always: a status implies the earlier ones and each time is the
earliest evidence seen; a delivered/undelivered callback's RawDlrDoneDate (the carrier's receipt,
YYMMDDhhmm, no time zone) is used when, read as UTC, it fits between the request and the
callback's arrival. Time to deliver runs from the request (sending_at) to delivered_at.
"""

import importlib
import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from campaigns import services
from campaigns.models import Recipient
from messaging.models import Message, MessageStatus, ProviderCallback
from messaging.services.status import provider_done_at, status_callback_record, status_callbacks_apply_pending
from messaging.signals import message_status_changed, message_statuses_changed
from reporting.selectors import campaign_summary
from reporting.summary_scanned import campaign_summary_scanned
from tests import delivery
from tests.delivery import campaign_with_audience, drain
from tests.twilio_webhooks import PUBLIC, STATUS_PATH, post_form, status_payload

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db

PHONES = [f"+2547140000{n:02d}" for n in range(10)]
# Per message, in send order: the RawDlrDoneDate of its delivered callback as minutes after the
# request (None: no receipt). -1 is within the receipt's minute precision before the request:
# used, clamped to the request. +180 is a carrier's local time (3 h ahead: after the callback
# arrived) and -3 is before the request could have left: both ignored, the arrival counts.
RECEIPT_MINUTES = [-1, 2, 5, 9, 12, 15, 180, -3, None, None]
TRUSTED = 6  # the first six receipts are used
NO_SENT_CALLBACK = 9  # Twilio sometimes skips "sent": delivered implies it


def raw_dlr_done_date(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%y%m%d%H%M")


def test_shuffled_and_replayed_callbacks_give_ordered_times_and_the_true_median(
    fake, client, settings, django_capture_on_commit_callbacks
):
    settings.PUBLIC_BASE_URL = PUBLIC
    campaign = campaign_with_audience(phones=PHONES)
    run = services.campaign_launch(campaign)
    drain(run)
    messages = list(Message.objects.filter(recipient__run=run).order_by("to_address"))
    assert [m.to_address for m in messages] == PHONES and all(m.provider_sid for m in messages)
    assert {fake.requests_to(phone) for phone in PHONES} == {1}

    # The requests left two hours ago, on a whole minute (the test cannot wait that long): the
    # callbacks arriving now are two hours late, the receipts tell when delivery happened.
    sent_at = timezone.now().replace(second=0, microsecond=0) - timedelta(hours=2)
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(
        created_at=sent_at - timedelta(seconds=1), claimed_at=sent_at, sending_at=sent_at, queued_at=sent_at
    )

    callbacks = []
    for index, message in enumerate(messages):
        for status in ("sent", "delivered", "read"):
            if status == "sent" and index == NO_SENT_CALLBACK:
                continue
            payload = status_payload(message.provider_sid, status)
            payload.pop("RawDlrDoneDate", None)
            minutes = RECEIPT_MINUTES[index]
            if status == "delivered" and minutes is not None:
                payload["RawDlrDoneDate"] = raw_dlr_done_date(sent_at + timedelta(minutes=minutes))
            callbacks.append((index, status, payload))
    callbacks = callbacks * 2  # Twilio retries: every callback arrives twice
    random.Random(19).shuffle(callbacks)
    # The shuffle holds a receipt arriving after the message was already read (a time moves back
    # without the status: the counters must follow).
    first = {}
    for position, (index, status, _) in enumerate(callbacks):
        first.setdefault((index, status), position)
    assert any(first[(i, "read")] < first[(i, "delivered")] for i in range(TRUSTED))

    arrived: dict[tuple[int, str], tuple[datetime, datetime]] = {}  # first arrival of each, between two clocks
    with django_capture_on_commit_callbacks(execute=True):
        for index, status, payload in callbacks:
            before = timezone.now()
            assert post_form(client, STATUS_PATH, payload, token=delivery.TOKEN).status_code == 200
            arrived.setdefault((index, status), (before, timezone.now()))
    assert ProviderCallback.objects.count() == len(callbacks) // 2

    def earliest(index: int, *statuses: str) -> tuple[datetime, datetime]:
        return min(arrived[(index, s)] for s in statuses if (index, s) in arrived)

    durations = []
    for index, message in enumerate(messages):
        message.refresh_from_db()
        assert message.status == MessageStatus.READ
        assert message.sending_at <= message.queued_at <= message.sent_at <= message.delivered_at <= message.read_at
        low, high = earliest(index, "read")
        assert low <= message.read_at <= high
        if index < TRUSTED:
            receipt = max(sent_at + timedelta(minutes=RECEIPT_MINUTES[index]), sent_at)
            assert message.delivered_at == receipt
            assert message.sent_at == receipt  # the earliest evidence it was sent
            durations.append((receipt - sent_at).total_seconds())
        else:
            low, high = earliest(index, "delivered", "read")
            assert low <= message.delivered_at <= high
            low, high = earliest(index, "sent", "delivered", "read")
            assert low <= message.sent_at <= high
            durations.append((message.delivered_at - sent_at).total_seconds())
    # From the times the test chose: 0, 120, 300, 540, 720, 900 s, and four two hours late.
    expected = statistics.median(durations)
    assert expected == 810.0
    assert campaign_summary_scanned(campaign)["median_seconds_to_deliver"] == expected
    assert campaign_summary(campaign)["median_seconds_to_deliver"] == expected  # whole seconds under 1,000
    assert campaign_summary(campaign) == campaign_summary_scanned(campaign)
    assert Recipient.objects.filter(run=run).count() == len(PHONES)


SID = "SM" + "c4" * 16


def _message(**fields) -> Message:
    fields.setdefault("status", MessageStatus.QUEUED)
    return Message.objects.create(channel="sms", to_address="+254712345678", **fields)


def _record(status: str, raw: str | None = None, error_code: str = "") -> None:
    payload = status_payload(SID, status, error_code=error_code)
    payload.pop("RawDlrDoneDate", None)
    if raw is not None:
        payload["RawDlrDoneDate"] = raw
    status_callback_record(provider_sid=SID, status=status, error_code=error_code, payload=payload)


def test_a_receipt_that_arrived_before_the_sid_was_saved_is_used_when_applied():
    request = timezone.now().replace(second=0, microsecond=0) - timedelta(hours=1)
    message = _message(sending_at=request)
    _record("delivered", raw_dlr_done_date(request + timedelta(minutes=7)))
    _record("sent")
    message.provider_sid = SID
    message.save(update_fields=["provider_sid"])
    assert status_callbacks_apply_pending(message) == 2
    assert message.sent_at == message.delivered_at == request + timedelta(minutes=7)


def test_an_undelivered_receipt_dates_the_failure_and_the_send():
    request = timezone.now().replace(second=0, microsecond=0) - timedelta(hours=1)
    message = _message(provider_sid=SID, sending_at=request)
    _record("sent")
    _record("undelivered", raw_dlr_done_date(request + timedelta(minutes=4)), error_code="30003")
    message.refresh_from_db()
    assert message.status == MessageStatus.UNDELIVERED
    assert message.sent_at == message.failed_at == request + timedelta(minutes=4)


def test_a_receipt_on_another_status_or_unreadable_is_ignored():
    assert provider_done_at(MessageStatus.SENT, {"RawDlrDoneDate": "2612041200"}) is None
    for raw in ("2613041200", "261204120", "26120412000", "tomorrow", 2612041200, ""):
        assert provider_done_at(MessageStatus.DELIVERED, {"RawDlrDoneDate": raw}) is None, raw
    assert provider_done_at(MessageStatus.DELIVERED, {"RawDlrDoneDate": "2612041230"}) == datetime(
        2026, 12, 4, 12, 30, tzinfo=UTC
    )


def test_a_later_arrival_never_moves_a_time_later():
    message = _message(provider_sid=SID)
    _record("read")
    message.refresh_from_db()
    read = message.read_at
    _record("delivered")
    _record("sent")
    message.refresh_from_db()
    assert message.sent_at == message.delivered_at == message.read_at == read


def test_a_time_moved_back_without_the_status_is_signalled_for_campaign_messages(django_capture_on_commit_callbacks):
    from django.contrib.contenttypes.models import ContentType

    request = timezone.now().replace(second=0, microsecond=0) - timedelta(hours=1)
    caused = _message(provider_sid=SID, sending_at=request, source_type=ContentType.objects.get_for_model(Recipient))
    changed, batches = [], []

    def on_change(sender, message_id, old, new, **kwargs):
        changed.append((old, new))

    def on_batch(sender, message_ids, **kwargs):
        batches.append(message_ids)

    message_status_changed.connect(on_change)
    message_statuses_changed.connect(on_batch)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            _record("read")
            _record("delivered", raw_dlr_done_date(request + timedelta(minutes=3)))
    finally:
        message_status_changed.disconnect(on_change)
        message_statuses_changed.disconnect(on_batch)
    assert changed == [("queued", "read")]  # the status signal keeps old != new
    assert batches == [[caused.pk]]
    caused.refresh_from_db()
    assert caused.delivered_at == request + timedelta(minutes=3) < caused.read_at


def test_the_data_migration_orders_existing_times():
    migration = importlib.import_module("messaging.migrations.0007_message_status_times_earliest_evidence")
    t = timezone.now() - timedelta(hours=1)
    swapped = _message(
        status=MessageStatus.READ,
        queued_at=t,
        sent_at=t + timedelta(seconds=50),
        delivered_at=t + timedelta(seconds=20),
        read_at=t + timedelta(seconds=60),
    )
    no_sent = _message(status=MessageStatus.READ, queued_at=t, read_at=t + timedelta(seconds=30))
    undelivered = _message(status=MessageStatus.UNDELIVERED, queued_at=t, failed_at=t + timedelta(seconds=9))
    fine = _message(status=MessageStatus.DELIVERED, queued_at=t, sent_at=t, delivered_at=t + timedelta(seconds=5))
    untouched = Message.objects.get(pk=fine.pk).updated_at
    with connection.cursor() as cursor:
        cursor.execute(migration.FORWARD)
    for message in (swapped, no_sent, undelivered, fine):
        message.refresh_from_db()
    assert (swapped.sent_at, swapped.delivered_at) == (t + timedelta(seconds=20), t + timedelta(seconds=20))
    assert no_sent.sent_at == no_sent.delivered_at == no_sent.read_at
    assert undelivered.sent_at == undelivered.failed_at
    assert (fine.sent_at, fine.delivered_at, fine.updated_at) == (t, t + timedelta(seconds=5), untouched)
