"""Goal events left unchecked while the beat or the workers were down are attributed by the next
sweeps whatever their age, oldest first, a batch at a time; the query that finds them reads an index
range from each goal name's horizon, not the whole event table."""

import re
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import AttributionCheck, AttributionHorizon, Conversion, Event
from campaigns.services import attribution
from campaigns.services.attribution import conversions_attribute
from tests.campaigns.test_conversions import DAY, NOW, attribute, event, goal, reached
from tests.factories import ContactFactory
from tests.reporting.support import make_campaign

pytestmark = pytest.mark.django_db


def _received(happened: Event, at) -> Event:
    Event.objects.filter(pk=happened.pk).update(received_at=at)
    return happened


def test_an_event_received_two_days_ago_never_checked_is_attributed_by_the_next_sweep():
    campaign = goal(make_campaign())
    contact = ContactFactory()
    recipient = reached(campaign, contact, at=NOW - 3 * DAY)
    happened = _received(event(contact, NOW - 2 * DAY - timedelta(hours=1)), NOW - 2 * DAY)
    # The last sweep ran just before the event came, then nothing ran for two days.
    AttributionHorizon.objects.create(event_name="order_placed", checked_until=NOW - 2 * DAY - timedelta(minutes=1))
    assert attribute() == 1
    conversion = Conversion.objects.get()
    assert (conversion.event_id, conversion.recipient_id) == (happened.pk, recipient.pk)
    assert AttributionHorizon.objects.get().checked_until > timezone.now()  # caught up to the sweep's time


def test_a_goal_name_never_swept_is_read_from_its_first_event():
    campaign = goal(make_campaign())
    contact = ContactFactory()
    reached(campaign, contact, at=NOW - 10 * DAY)
    _received(event(contact, NOW - 9 * DAY), NOW - 9 * DAY)
    assert attribute() == 1


def test_the_window_still_decides_however_late_the_sweep():
    campaign = goal(make_campaign(), goal_window=timedelta(hours=6))
    contact = ContactFactory()
    reached(campaign, contact, at=NOW - 3 * DAY)
    happened = _received(event(contact, NOW - 2 * DAY), NOW - 2 * DAY)  # 24 h after the message: too late
    assert attribute() == 0
    assert AttributionCheck.objects.filter(event_id=happened.pk).exists()  # looked at, never again


def test_a_backlog_bigger_than_a_batch_is_read_oldest_first_over_several_sweeps():
    campaign = goal(make_campaign())
    contacts = [ContactFactory() for _ in range(5)]
    for n, contact in enumerate(contacts):
        reached(campaign, contact, at=NOW - 4 * DAY)
        _received(event(contact, NOW - 3 * DAY + timedelta(hours=n)), NOW - 3 * DAY + timedelta(hours=n))
    later = timezone.now() + timedelta(seconds=30)
    assert [conversions_attribute(now=later, limit=2) for _ in range(4)] == [2, 2, 1, 0]
    first_two = Conversion.objects.order_by("id").values_list("contact_id", flat=True)[:2]
    assert sorted(first_two) == sorted(contact.pk for contact in contacts[:2])
    assert AttributionCheck.objects.count() == 5


def test_an_event_committed_just_after_a_sweep_passed_its_time_is_still_read():
    campaign = goal(make_campaign())
    contact = ContactFactory()
    reached(campaign, contact, at=NOW - DAY)
    AttributionHorizon.objects.create(event_name="order_placed", checked_until=NOW)
    _received(event(contact, NOW - timedelta(minutes=1)), NOW - timedelta(minutes=1))  # within the slack
    assert attribute() == 1


def test_the_unchecked_events_query_reads_an_index_range_from_the_horizon():
    goal(make_campaign())
    AttributionHorizon.objects.create(event_name="order_placed", checked_until=NOW)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # near-empty tables: make the planner show its indexes
        cursor.execute(
            "EXPLAIN " + attribution._EVENTS_SQL,
            {"names": ["order_placed"], "since": [NOW], "until": NOW, "limit": 1000},
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # An index range of campaigns_event bounded by the horizon (by name and time, or by time), never a
    # scan of every event; each one found is checked against AttributionCheck by its key.
    assert "Seq Scan on campaigns_event" not in plan and "Bitmap Heap Scan on campaigns_event" not in plan, plan
    assert re.search(r"Index Cond: .*received_at >= COALESCE\(g\.since", plan), plan
    assert "Index Only Scan using campaigns_attributioncheck_pkey" in plan, plan
