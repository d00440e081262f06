"""The matchers: each stored event answers each matching campaign once, through crashes, races and replays."""

import threading
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from audience import services as audience
from audience.models import Contact
from campaigns import services
from campaigns.models import Campaign, CampaignRun, Event, PendingEvent, Recipient
from campaigns.services import events
from campaigns.tasks import events_match_task
from messaging.models import Message
from tests.delivery import assert_counts_match_recount
from tests.factories import MessageTemplateFactory, SenderFactory

PHONES = [f"+25471300{n:04d}" for n in range(40)]


def _campaign(name="Shipped", **fields) -> Campaign:
    template = MessageTemplateFactory(body="Order {{ event.order_id }} shipped")
    sender = SenderFactory()
    fields.setdefault("trigger_event", "order_shipped")
    campaign = services.campaign_create(name=name, kind="triggered", template=template, sender=sender, **fields)
    services.campaign_launch(campaign)
    return campaign


def _store(contact_ids, name="order_shipped", **properties) -> list[int]:
    items = [
        events.EventIn(
            index, uuid.uuid4().hex, "", name, {"order_id": "A", **properties}, None, contact_id, None, False
        )
        for index, contact_id in enumerate(contact_ids)
    ]
    return [outcome.event_id for outcome in events.events_store(items)]


@pytest.fixture
def contacts(db):
    return [audience.contact_create(phone=phone, name="C").pk for phone in PHONES]


@pytest.mark.django_db
def test_a_crash_while_matching_leaves_the_batch_pending_and_the_next_matcher_answers_it_once(contacts):
    campaign = _campaign()
    _store(contacts[:20])
    with mock.patch.object(events.answers, "_counters_add", side_effect=RuntimeError("worker killed")):
        with pytest.raises(RuntimeError):
            events.events_match()
    assert Event.objects.filter(status="pending").count() == 20
    assert not Recipient.objects.exists() and not Message.objects.exists()
    assert len(events.events_match()) == 20
    assert events.events_match() == []
    assert Recipient.objects.count() == 20 and Message.objects.count() == 20
    assert_counts_match_recount(CampaignRun.objects.get(campaign=campaign))


@pytest.mark.django_db
def test_the_database_refuses_a_second_answer_even_to_a_matcher_that_reprocesses_an_event(contacts):
    campaign = _campaign()
    [event_id] = _store(contacts[:1])
    events.events_match()
    # As if its "matched" mark and its leaving the queue were lost.
    Event.objects.filter(pk=event_id).update(status="pending")
    PendingEvent.objects.create(event_id=event_id)
    events.events_match()
    assert Recipient.objects.filter(event_id=event_id).count() == 1
    assert list(Event.objects.get(pk=event_id).matched_campaigns.all()) == [campaign]
    assert CampaignRun.objects.get(campaign=campaign).total == 1


@pytest.mark.django_db
def test_the_frequency_cap_counts_earlier_events_of_the_same_batch_and_of_other_campaigns(contacts):
    first = _campaign("First", frequency_cap=1, frequency_window=timedelta(hours=1))
    second = _campaign("Second", frequency_cap=2, frequency_window=timedelta(hours=1))
    _store([contacts[0], contacts[0], contacts[1]])
    events.events_match()
    states = {
        (r.event.idempotency_key, r.run.campaign.name): (r.event_id, r.state, r.reason)
        for r in Recipient.objects.select_related("event", "run__campaign")
    }
    by_campaign = {
        name: sorted((event_id, state, reason) for (_, n), (event_id, state, reason) in states.items() if n == name)
        for name in ("First", "Second")
    }
    # contact 0: first event -> First pending, Second pending (2 queued); second event -> both capped
    assert [s for _, s, _ in by_campaign["First"]] == ["pending", "skipped", "pending"]
    assert [r for _, _, r in by_campaign["First"]] == ["", "capped", ""]
    assert [s for _, s, _ in by_campaign["Second"]] == ["pending", "skipped", "pending"]
    for campaign in (first, second):
        assert_counts_match_recount(CampaignRun.objects.get(campaign=campaign))


@pytest.mark.django_db
def test_property_conditions_and_contact_rules_hold_over_a_batch(contacts):
    _campaign(trigger_conditions=[{"property": "total", "op": "gte", "value": 100}], trigger_contact_rule="age >= 18")
    Contact.objects.filter(pk__in=contacts[:2]).update(attributes={"age": 30})
    big = _store(contacts[:4], total=150)
    small = _store(contacts[:4], total=5)
    events.events_match()
    answered = set(Recipient.objects.values_list("event_id", flat=True))
    assert answered == set(big[:2])
    assert set(Event.objects.filter(pk__in=big + small).values_list("status", flat=True)) == {"matched"}


@pytest.mark.django_db(transaction=True)
def test_racing_matchers_answer_every_event_exactly_once(contacts):
    campaign = _campaign()
    _campaign("Also", trigger_conditions=[{"property": "order_id", "op": "eq", "value": "A"}])
    stored = _store(contacts * 5)  # 200 events, 5 per contact
    errors = []

    def matcher():
        try:
            while events.events_match(limit=25):
                pass
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=matcher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert Recipient.objects.count() == 2 * len(stored)
    assert Recipient.objects.values("event_id", "run_id").distinct().count() == 2 * len(stored)
    assert not Event.objects.filter(status="pending").exists()
    assert_counts_match_recount(CampaignRun.objects.get(campaign=campaign))


@pytest.mark.django_db
def test_a_matcher_marks_its_events_before_it_locks_a_run(contacts):
    # Marking a batch is its costliest write: done under the run's lock, it would hold a second
    # matcher back for as long (they share the run row).
    _campaign()
    _store(contacts[:3])
    with CaptureQueriesContext(connection) as queries:
        assert len(events.events_match()) == 3
    statements = [query["sql"] for query in queries.captured_queries]
    run_locked = next(n for n, sql in enumerate(statements) if "campaigns_campaignrun" in sql and "FOR UPDATE" in sql)
    assert any("UPDATE campaigns_event" in sql for sql in statements[:run_locked])
    assert not any("UPDATE campaigns_event" in sql for sql in statements[run_locked:])


@pytest.mark.django_db
def test_a_run_closed_between_deciding_and_writing_is_decided_again_without_it(contacts):
    # Answers are decided before the runs are locked; a campaign cancelled meanwhile gets none,
    # and its answer no longer counts against the other campaign's frequency cap.
    first = _campaign("First", frequency_cap=1, frequency_window=timedelta(hours=1))
    second = _campaign("Second", frequency_cap=1, frequency_window=timedelta(hours=1))
    _store(contacts[:1])
    write = events.answers.BatchAnswers.write

    def cancel_then_write(answers):
        assert {answer.state for answer, _ in answers.rows[second.pk]} == {"skipped"}  # capped by First's
        services.campaign_cancel(first)
        write(answers)

    with mock.patch.object(events.answers.BatchAnswers, "write", cancel_then_write):
        assert len(events.events_match()) == 1
    [recipient] = Recipient.objects.all()
    assert (recipient.run.campaign_id, recipient.state) == (second.pk, "pending")
    assert CampaignRun.objects.get(campaign=first).total == 0
    assert_counts_match_recount(CampaignRun.objects.get(campaign=second))


@pytest.mark.django_db
def test_the_matcher_task_clears_its_kick_and_requeues_itself_while_more_is_left(contacts):
    _campaign()
    _store(contacts[:3])
    with mock.patch.object(events, "events_match_pending", return_value=(500, True)) as pending:
        with mock.patch("campaigns.tasks.events_match_task.delay") as delay:
            events_match_task()
    assert pending.called and delay.call_count == 1
    assert events_match_task() == 3
    assert Recipient.objects.count() == 3


@pytest.mark.django_db
def test_a_backlog_wakes_one_second_matcher_that_shares_it(contacts):
    _campaign()
    _store(contacts[:25])
    events.helper_done()
    with mock.patch("campaigns.tasks.events_match_helper.delay") as delay:
        assert events.events_match_pending(limit=10) == (25, False)  # two full batches, then the rest
    assert delay.call_count == 1  # its key holds back a third
    events.helper_done()
    assert Recipient.objects.count() == 25


@pytest.mark.django_db
def test_matching_takes_the_events_off_the_queue_and_marks_them_in_place(contacts):
    _campaign()
    stored = _store(contacts * 5)  # 200 events: pages of them, not one
    assert set(PendingEvent.objects.values_list("event_id", flat=True)) == set(stored)
    updates_before = _event_updates()
    assert len(events.events_match()) == 200
    assert not PendingEvent.objects.exists()
    # No index holds what marking changes, and each page has room for its rows' new versions:
    # PostgreSQL rewrites them in place (HOT) without touching an index.
    updated, hot = (after - before for after, before in zip(_event_updates(), updates_before, strict=True))
    assert (updated, hot) == (200, 200)
    assert set(Event.objects.filter(pk__in=stored).values_list("status", flat=True)) == {"matched"}


@pytest.mark.django_db
def test_a_queued_event_deleted_before_it_was_matched_leaves_the_queue_with_the_next_matcher(contacts):
    _campaign()
    gone, kept = _store(contacts[:2])
    Event.objects.filter(pk=gone).delete()  # e.g. its contact erased meanwhile
    assert PendingEvent.objects.filter(event_id=gone).exists()  # no cascade: no constraint to check
    assert events.events_match() == [kept]
    assert not PendingEvent.objects.exists()
    assert Recipient.objects.get().event_id == kept


@pytest.mark.django_db(transaction=True)
def test_a_queued_event_another_transaction_holds_is_skipped_and_answered_once_it_is_free(contacts):
    campaign = _campaign()
    held, free = _store(contacts[:2])
    locked, release, done = threading.Event(), threading.Event(), threading.Event()

    def holder():
        try:
            with transaction.atomic():  # as the waiting door does with the event it matches
                Event.objects.select_for_update(no_key=True).get(pk=held)
                locked.set()
                release.wait(30)
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=holder)
    thread.start()
    assert locked.wait(30)
    try:
        assert events.events_match() == [free]
        assert PendingEvent.objects.filter(event_id=held).exists()  # still queued, not lost
    finally:
        release.set()
        thread.join(30)
    assert done.is_set()
    assert events.events_match() == [held]
    assert not PendingEvent.objects.exists()
    assert sorted(Recipient.objects.values_list("event_id", flat=True)) == sorted([held, free])
    assert_counts_match_recount(CampaignRun.objects.get(campaign=campaign))


@pytest.mark.django_db
def test_an_event_matched_by_id_leaves_the_queue_and_no_worker_answers_it_again(contacts):
    _campaign()
    [event_id] = _store(contacts[:1])
    assert events.events_match([event_id]) == [event_id]  # the waiting door, on a replay
    assert not PendingEvent.objects.exists()
    assert events.events_match() == []
    assert Recipient.objects.filter(event_id=event_id).count() == 1


def _event_updates() -> tuple[int, int]:
    """Rows of campaigns_event this backend updated, and HOT-updated, since its statistics were last sent."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT pg_stat_get_xact_tuples_updated('campaigns_event'::regclass),
                      pg_stat_get_xact_tuples_hot_updated('campaigns_event'::regclass)"""
        )
        return cursor.fetchone()
