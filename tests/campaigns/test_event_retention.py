"""Event retention: old events are deleted in batches; those a campaign answered stay, emptied."""

import datetime as dt
import threading
import uuid

import pytest
from django.db import connections
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from audience import services as audience
from campaigns import services
from campaigns.models import Event, Recipient
from campaigns.services import event_retention, events
from campaigns.tasks import event_retention_purge
from config.observe import redis_client
from tests.factories import MessageTemplateFactory, SenderFactory

PHONE = "+254713000001"


@pytest.fixture(autouse=True)
def no_watermark(db):
    key = event_retention._watermark_key()
    redis_client().delete(key)
    yield
    redis_client().delete(key)


@pytest.fixture
def contact(db):
    return audience.contact_create(phone=PHONE, name="Amina")


def make(contact, count: int, *, days_old: float, name: str = "app_opened") -> list[int]:
    now = timezone.now()
    rows = Event.objects.bulk_create(
        Event(contact=contact, name=name, properties={"n": n}, occurred_at=now, idempotency_key=uuid.uuid4().hex)
        for n in range(count)
    )
    ids = [row.pk for row in rows]
    Event.objects.filter(pk__in=ids).update(received_at=now - dt.timedelta(days=days_old))
    return ids


def answered_event(contact, *, days_old: float) -> Event:
    campaign = services.campaign_create(
        name="Shipped",
        kind="triggered",
        template=MessageTemplateFactory(body="Order {{ event.order_id }}"),
        sender=SenderFactory(),
        trigger_event="order_shipped",
    )
    services.campaign_launch(campaign)
    event, _ = events.event_record(
        contact=contact, name="order_shipped", properties={"order_id": "A-17"}, idempotency_key=uuid.uuid4().hex
    )
    Event.objects.filter(pk=event.pk).update(received_at=timezone.now() - dt.timedelta(days=days_old))
    assert Recipient.objects.filter(event=event).exists() and event.matched_campaigns.exists()
    return event


@pytest.mark.django_db
def test_events_past_the_retention_go_in_batches_and_younger_ones_stay(contact, settings):
    settings.RETENTION_EVENTS_DAYS = 30
    old = make(contact, 23, days_old=31)
    young = make(contact, 4, days_old=29)
    done = event_retention.event_retention_purge(batch_size=5)
    assert done == {"deleted": 23, "emptied": 0}
    assert set(Event.objects.values_list("pk", flat=True)) == set(young)
    assert not Event.objects.filter(pk__in=old).exists()


@pytest.mark.django_db
def test_an_answered_event_stays_with_its_recipient_its_properties_emptied(contact, settings):
    settings.RETENTION_EVENTS_DAYS = 30
    answered = answered_event(contact, days_old=40)
    make(contact, 3, days_old=40)
    done = event_retention.event_retention_purge(batch_size=2)
    assert done == {"deleted": 3, "emptied": 1}
    answered.refresh_from_db()
    assert answered.properties == {} and answered.name == "order_shipped"
    assert Recipient.objects.filter(event=answered).count() == 1 and answered.matched_campaigns.count() == 1


@pytest.mark.django_db
def test_running_twice_does_nothing_more_and_the_next_run_starts_where_the_last_ended(contact, settings):
    settings.RETENTION_EVENTS_DAYS = 30
    answered_event(contact, days_old=40)
    old = make(contact, 6, days_old=40)
    assert event_retention.event_retention_purge(batch_size=4) == {"deleted": 6, "emptied": 1}
    assert event_retention.event_retention_purge(batch_size=4) == {"deleted": 0, "emptied": 0}
    watermark = event_retention._watermark()
    assert watermark == max(old)  # the kept event lies behind it: the next run does not read it again
    later = make(contact, 2, days_old=35)  # arrived since, and now old enough
    assert min(later) > watermark
    assert event_retention.event_retention_purge() == {"deleted": 2, "emptied": 0}


@pytest.mark.django_db
def test_zero_days_keeps_every_event(contact, settings):
    settings.RETENTION_EVENTS_DAYS = 0
    make(contact, 3, days_old=4000)
    assert event_retention.event_retention_purge() == {"deleted": 0, "emptied": 0}
    assert Event.objects.count() == 3


@pytest.mark.django_db
def test_a_stale_watermark_past_the_last_event_starts_the_walk_again(contact, settings):
    settings.RETENTION_EVENTS_DAYS = 30
    ids = make(contact, 3, days_old=31)
    event_retention._watermark_raise(max(ids) + 1000)
    assert event_retention.event_retention_purge()["deleted"] == 3


@pytest.mark.django_db
def test_the_walk_passes_redis_by_when_it_is_down(contact, settings, monkeypatch):
    import redis

    class Down:
        def __getattr__(self, name):
            raise redis.ConnectionError("refused")

    monkeypatch.setattr(event_retention, "redis_client", lambda: Down())
    settings.RETENTION_EVENTS_DAYS = 30
    make(contact, 3, days_old=31)
    assert event_retention.event_retention_purge()["deleted"] == 3


@pytest.mark.django_db
def test_the_hourly_task_is_scheduled_and_purges(contact, settings):
    task = PeriodicTask.objects.get(name="campaigns: event retention purge")
    assert task.task == "campaigns.event_retention_purge" and task.interval.every == 3600 and task.enabled
    settings.RETENTION_EVENTS_DAYS = 1
    make(contact, 2, days_old=2)
    assert event_retention_purge() == {"deleted": 2, "emptied": 0}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("roles")  # a transactional test may follow one that flushed the role groups
def test_two_runs_at_once_delete_each_event_once(settings):
    settings.RETENTION_EVENTS_DAYS = 30
    contact = audience.contact_create(phone=PHONE, name="Amina")
    make(contact, 300, days_old=31)
    young = make(contact, 5, days_old=1)
    results, barrier = [], threading.Barrier(2)

    def run():
        barrier.wait()
        try:
            results.append(event_retention.event_retention_purge(batch_size=20))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.append(event_retention.event_retention_purge(batch_size=20))  # whatever a waiting run left
    assert sum(r["deleted"] for r in results) == 300
    assert sorted(Event.objects.values_list("pk", flat=True)) == sorted(young)


def test_retention_knows_every_table_that_points_at_events():
    """A new relation to Event must be handled by event_retention (delete with the event, or keep it)."""
    relations = {(rel.related_model._meta.db_table, rel.field.column) for rel in Event._meta.related_objects}
    relations |= {(f.remote_field.through._meta.db_table, "event_id") for f in Event._meta.many_to_many}
    assert relations == {("campaigns_recipient", "event_id"), ("campaigns_event_matched_campaigns", "event_id")}


@pytest.mark.django_db
def test_the_watermark_names_the_table_and_lives_a_week_from_when_it_was_set(contact, settings):
    settings.RETENTION_EVENTS_DAYS = 30
    ids = make(contact, 3, days_old=31)
    event_retention.event_retention_purge()
    key = event_retention._watermark_key()
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 'campaigns_event'::regclass::oid")
        assert key.endswith(f":{cursor.fetchone()[0]}")
    assert int(redis_client().get(key)) == max(ids)
    redis_client().expire(key, 100)
    more = make(contact, 2, days_old=31)
    event_retention.event_retention_purge()
    assert int(redis_client().get(key)) == max(more) and redis_client().ttl(key) <= 100
