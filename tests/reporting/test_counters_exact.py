"""Every kept counter equals a recount from the raw rows after a realistic mix of changes.

Two runs of one campaign reach overlapping contacts; status callbacks come unordered and twice,
recipients reply (through the inbound service, STOP included) and opt out (through the consent
service), a transactional message is sent too. The summary read from counters must equal the
summary computed by scanning, for the campaign and for each run, by hour and by minute; the
per-minute dashboard counters and the contact totals must equal their own recounts.
"""

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audience.models import ConsentSource, ConsentStatus, Contact
from audience.services import consent_change
from messaging.models import Direction
from messaging.services.inbound import inbound_message_record
from messaging.services.status import status_callback_record
from reporting.contact_totals import contact_totals, contact_totals_compact
from reporting.counters import (
    counters_read,
    counters_recount,
    counters_recounted,
    counters_sweep,
    counters_sync,
)
from reporting.models import CountedMessage, MinuteCounter
from reporting.selectors import campaign_summary
from reporting.summary_scanned import campaign_summary_scanned
from tests.factories import ContactFactory
from tests.reporting.support import add_recipient, make_campaign, make_message, make_run, run_counters_fill

pytestmark = pytest.mark.django_db

PLANS = [
    ["sent", "delivered", "read"],
    ["sent", "delivered"],
    ["delivered", "sent"],
    ["sent", "undelivered:30003"],
    ["failed:30007"],
    ["sent"],
    ["sent", "delivered", "failed:30008"],
    ["queued", "sent", "delivered"],
]


def _callback(sid: str, step: str) -> None:
    status, _, code = step.partition(":")
    payload = {"MessageSid": sid, "MessageStatus": status, **({"ErrorCode": code} if code else {})}
    status_callback_record(provider_sid=sid, status=status, error_code=code, payload=payload)


def _minutes_recounted() -> dict:
    sql = """
        SELECT minute, sum(o), sum(i), sum(a), sum(f) FROM messaging_message m CROSS JOIN LATERAL (VALUES
            (date_trunc('minute', m.created_at), (m.direction = 'outbound')::int, (m.direction = 'inbound')::int, 0, 0),
            (CASE WHEN m.direction = 'outbound' THEN date_trunc('minute', COALESCE(m.queued_at, m.sent_at)) END,
             0, 0, 1, 0),
            (CASE WHEN m.direction = 'outbound' THEN date_trunc('minute', m.failed_at) END, 0, 0, 0, 1)
        ) AS v (minute, o, i, a, f)
        WHERE minute IS NOT NULL GROUP BY minute
    """
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {row[0]: tuple(int(x) for x in row[1:]) for row in cursor.fetchall() if any(row[1:])}


def _minutes_kept() -> dict:
    rows = MinuteCounter.objects.values_list("minute", "outbound", "inbound", "accepted", "failed")
    return {row[0]: tuple(row[1:]) for row in rows if any(row[1:])}


def _assert_every_counter_equals_a_recount(campaign, runs) -> None:
    for run in [None, *runs]:
        for bucket in ("hour", "minute"):
            kept = campaign_summary(campaign, run=run, bucket=bucket)
            scanned = campaign_summary_scanned(campaign, run=run, bucket=bucket)
            # The median is read from delivery-time buckets: whole seconds (these are sub-second).
            kept_median, exact_median = kept.pop("median_seconds_to_deliver"), scanned.pop("median_seconds_to_deliver")
            assert kept == scanned
            assert (kept_median is None) == (exact_median is None)
            if exact_median is not None:
                assert abs(kept_median - exact_median) <= max(0.5, exact_median * 0.005)
    run_ids = [run.pk for run in runs]
    assert counters_read(run_ids) == counters_recounted(run_ids)
    assert _minutes_kept() == _minutes_recounted()
    assert contact_totals() == (
        Contact.objects.count(),
        Contact.objects.filter(consent_status=ConsentStatus.OPTED_OUT).count(),
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_every_counter_equals_a_recount_after_callbacks_replies_and_opt_outs(seed, django_capture_on_commit_callbacks):
    rng = random.Random(seed)
    now = timezone.now()
    campaign = make_campaign()
    run1 = make_run(campaign, at=now - timedelta(hours=2), status="running")
    run2 = make_run(campaign, at=now - timedelta(hours=1), status="running")
    contacts = ContactFactory.create_batch(len(PLANS))
    # Run 2 reaches half the contacts again: a reply after both messages counts once for the campaign.
    recipients = [add_recipient(run1, contact=c, message_status="queued") for c in contacts]
    recipients += [add_recipient(run2, contact=c, message_status="queued") for c in contacts[::2]]
    transactional = make_message(status="queued", created_at=now)
    run_counters_fill(run1, run2)
    counters_sweep(since=now - timedelta(hours=3))  # creation has no signal: the sweep counts it

    events = []
    for recipient, plan in zip(recipients, PLANS + PLANS[: len(contacts[::2])], strict=True):
        events += [(recipient.message.provider_sid, step) for step in plan]
    events += [(transactional.provider_sid, "delivered")]
    events += rng.sample(events, len(events) // 2)  # Twilio retries
    rng.shuffle(events)
    with django_capture_on_commit_callbacks(execute=True):
        for sid, step in events[: len(events) // 2]:
            _callback(sid, step)
        # Replies (one is STOP, which opts the contact out), then an opt-out through the API's service.
        for index, contact in enumerate(contacts[:4]):
            inbound_message_record(
                provider_sid=f"SMin{seed}{index:028d}",
                from_address=contact.phone,
                to_address=campaign.sender.from_address,
                body="STOP" if index == 1 else "Thanks!",
                payload={},
            )
        consent_change(contacts[5], to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.API)
        for sid, step in events[len(events) // 2 :]:
            _callback(sid, step)
    counters_sweep()  # the transactional message's changes have no receiver: the sweep counts them

    _assert_every_counter_equals_a_recount(campaign, [run1, run2])
    summary = campaign_summary(campaign)
    assert summary["replies"] >= 1 and summary["opt_outs_72h"] >= 1
    per_run = sum(campaign_summary(campaign, run=run)["replies"] for run in (run1, run2))
    assert summary["replies"] <= per_run  # shared contacts' replies counted once for the campaign

    # Duplicates change nothing: syncing again moves no counted row.
    assert counters_sync(CountedMessage.objects.values_list("message_id", flat=True)) == 0
    # Compaction and a rebuild leave every figure as it was.
    before = campaign_summary(campaign)
    contact_totals_compact()
    counters_recount()
    assert campaign_summary(campaign) == before
    _assert_every_counter_equals_a_recount(campaign, [run1, run2])


def test_a_reply_counts_once_for_the_campaign_and_once_for_each_run(django_capture_on_commit_callbacks):
    now = timezone.now()
    campaign = make_campaign()
    runs = [make_run(campaign, at=now - timedelta(hours=h), status="completed") for h in (3, 2)]
    contact = ContactFactory()
    for run in runs:
        add_recipient(run, contact=contact, message_status="delivered", sent=now - timedelta(minutes=30))
    run_counters_fill(*runs)
    counters_sweep(since=now - timedelta(hours=4))
    with django_capture_on_commit_callbacks(execute=True):
        inbound_message_record(
            provider_sid="SM" + "9" * 32, from_address=contact.phone, to_address="+15005550006", body="Hi", payload={}
        )
    assert campaign_summary(campaign)["replies"] == 1
    assert campaign_summary(campaign)["repliers"] == 2
    assert [campaign_summary(campaign, run=run)["replies"] for run in runs] == [1, 1]
    assert campaign_summary(campaign) == campaign_summary_scanned(campaign)


def test_an_opt_out_after_72_hours_is_not_counted(django_capture_on_commit_callbacks):
    now = timezone.now()
    campaign = make_campaign()
    run = make_run(campaign, at=now - timedelta(days=4))
    early, late = ContactFactory(), ContactFactory()
    add_recipient(run, contact=early, message_status="delivered", sent=now - timedelta(hours=2))
    add_recipient(run, contact=late, message_status="delivered", sent=now - timedelta(hours=80))
    run_counters_fill(run)
    counters_sweep(since=now - timedelta(days=5))
    with django_capture_on_commit_callbacks(execute=True):
        for contact in (early, late):
            consent_change(contact, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.ADMIN)
    assert campaign_summary(campaign)["opt_outs_72h"] == 1
    assert campaign_summary(campaign) == campaign_summary_scanned(campaign)


def test_the_median_time_to_deliver_comes_from_buckets():
    campaign = make_campaign()
    run = make_run(campaign)
    for seconds in (3, 7, 1500.4, 2000):  # above 1,000 s the bucket keeps three significant figures
        add_recipient(run, message_status="delivered", sent=run.started_at, delivered_after=seconds)
    counters_recount([run.pk])
    # percentile_cont over the buckets 3, 7, 1500, 2000: halfway between 7 and 1500.
    assert campaign_summary(campaign)["median_seconds_to_deliver"] == 753.5
    assert campaign_summary_scanned(campaign)["median_seconds_to_deliver"] == 753.7  # exact


def test_the_rebuild_command_repairs_corrupted_counters():
    from io import StringIO

    from django.core.management import call_command

    from reporting.models import RunEngagementCounter, RunMinuteCounter

    now = timezone.now()
    campaign = make_campaign()
    run = make_run(campaign, at=now - timedelta(hours=1))
    add_recipient(run, message_status="read", sent=now - timedelta(minutes=50), delivered_after=5, read_after=9)
    run_counters_fill(run)
    counters_sweep(since=now - timedelta(hours=2))
    truth = campaign_summary_scanned(campaign)
    RunMinuteCounter.objects.update(sent=99)
    RunEngagementCounter.objects.all().delete()
    MinuteCounter.objects.update(accepted=42)
    assert campaign_summary(campaign) != truth
    out = StringIO()
    call_command("rebuild_reporting_counters", stdout=out)
    assert "every run" in out.getvalue()
    assert campaign_summary(campaign) == truth
    assert _minutes_kept() == _minutes_recounted()


def test_inbound_messages_of_unknown_senders_and_transactional_sends_touch_no_run_counter(
    django_capture_on_commit_callbacks,
):
    from reporting.models import MessageStatusCounter, RunEngagementCounter

    with django_capture_on_commit_callbacks(execute=True):
        inbound_message_record(
            provider_sid="SM" + "8" * 32, from_address="+447700900999", to_address="+15005550006", body="?", payload={}
        )
    make_message(status="sent", direction=Direction.OUTBOUND, created_at=timezone.now())
    counters_sweep()
    assert not MessageStatusCounter.objects.exists() and not RunEngagementCounter.objects.exists()
    assert _minutes_kept() == _minutes_recounted()
    assert sum(row[1] for row in _minutes_kept().values()) == 1  # the inbound one
