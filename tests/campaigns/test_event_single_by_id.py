"""A single event for a contact id, stored first: its own prepared statement, the same answers as a batch's."""

import datetime as dt

import pytest
from django.utils import timezone

from audience import services as audience
from campaigns import services
from campaigns.models import Event, Recipient
from campaigns.tasks import events_sweep
from tests.factories import MessageTemplateFactory, SenderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def contact():
    contact = audience.contact_create(phone="+254713000011", name="Amina")
    template = MessageTemplateFactory(body="Order {{ event.order_id }} shipped")
    campaign = services.campaign_create(
        name="Shipped", kind="triggered", template=template, sender=SenderFactory(), trigger_event="order_shipped"
    )
    services.campaign_launch(campaign)
    return contact


def post(client, body, key):
    return client.post("/api/v1/events/?wait=false", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_stored_then_replayed_then_refused_with_another_body(staff_api, contact):
    occurred = timezone.now() - dt.timedelta(hours=2)
    body = {"contact": contact.pk, "name": "order_shipped", "properties": {"order_id": "A-1"}, "occurred_at": occurred}
    first = post(staff_api, body, "k1")
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    event = Event.objects.get(pk=first.json()["id"])
    assert (event.contact_id, event.status, event.properties) == (contact.pk, "pending", {"order_id": "A-1"})
    assert event.occurred_at == occurred and event.request_hash and event.received_at >= occurred
    replay = post(staff_api, body, "k1")
    assert (replay.status_code, replay.json()["status"], replay.json()["id"]) == (202, "replayed", event.pk)
    conflict = post(staff_api, {**body, "properties": {"order_id": "B-2"}}, "k1")
    assert conflict.status_code == 422 and "Idempotency-Key" in conflict.json()
    events_sweep()
    assert Recipient.objects.get().event_id == event.pk and Event.objects.get().status == "matched"


def test_an_unknown_id_is_refused_even_with_a_key_used_before(staff_api, contact):
    assert post(staff_api, {"contact": contact.pk, "name": "order_shipped"}, "k2").status_code == 202
    refused = post(staff_api, {"contact": contact.pk + 1000, "name": "order_shipped"}, "k2")
    assert refused.status_code == 400 and refused.json() == {"contact": [f"no contact with id {contact.pk + 1000}"]}
    assert Event.objects.count() == 1
