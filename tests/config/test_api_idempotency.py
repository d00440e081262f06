"""One Idempotency-Key contract on every endpoint that takes one.

The same key with the same body replays the first answer and creates nothing; the same key with
another body is a 422 naming the header, also when the two requests race on the unique key.
"""

import threading
import time
import uuid

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from audience import services as audience
from audience.models import Contact
from campaigns import services as campaigns
from campaigns.models import Event
from config.idempotency import request_fingerprint
from messaging.models import Message
from messaging.services import create
from tests.factories import MessageTemplateFactory, SenderFactory, UserFactory

pytestmark = pytest.mark.django_db

PHONE = "+254713500001"


def message_body(text: str = "Your code is 1234") -> dict:
    return {"phone": PHONE, "body": text}


def event_body(order: str = "A-17") -> dict:
    return {"contact": PHONE, "name": "order_shipped", "properties": {"order_id": order}}


# (url, a body, another body, the first answer's status, its replay's status, what it creates)
ENDPOINTS = {
    "messages": ("/api/v1/messages/", message_body(), message_body("Your code is 9999"), 202, 200, Message),
    "events": ("/api/v1/events/", event_body(), event_body("B-2"), 201, 201, Event),
}


@pytest.fixture
def world():
    """A contact, an SMS sender, and a running triggered campaign for the events."""
    audience.contact_create(phone=PHONE, name="Amina")
    sender = SenderFactory()
    template = MessageTemplateFactory(body="Order {{ event.order_id }} shipped")
    campaign = campaigns.campaign_create(
        name="Shipped", kind="triggered", template=template, sender=sender, trigger_event="order_shipped"
    )
    campaigns.campaign_launch(campaign)
    return sender


def post(client, url: str, data: dict, key: str | None = "key-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(url, data, format="json", **headers)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_same_key_and_body_replays_the_first_answer(staff_api, world, endpoint):
    url, data, _other, created, replayed, model = ENDPOINTS[endpoint]
    first = post(staff_api, url, data)
    assert first.status_code == created, first.json()
    # The same body with its keys in another order is the same request.
    again = post(staff_api, url, dict(reversed(list(data.items()))))
    assert (again.status_code, again.json()) == (replayed, first.json())
    assert model.objects.count() == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_same_key_with_another_body_is_422_naming_the_header(staff_api, world, endpoint):
    url, data, other, created, _replayed, model = ENDPOINTS[endpoint]
    assert post(staff_api, url, data).status_code == created
    response = post(staff_api, url, other)
    assert response.status_code == 422, response.json()
    error = response.json()["Idempotency-Key"][0]
    assert "different request" in error and f"{model.__name__.lower()} {model.objects.get().pk}" in error
    assert model.objects.count() == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_key_longer_than_255_characters_is_a_400_naming_the_header(staff_api, world, endpoint):
    url, data, *_rest, model = ENDPOINTS[endpoint]
    response = post(staff_api, url, data, key="k" * 256)
    assert response.status_code == 400 and "255" in response.json()["Idempotency-Key"][0]
    assert not model.objects.exists()


def test_a_message_replay_answers_even_when_its_request_would_no_longer_validate(staff_api, world):
    first = post(staff_api, "/api/v1/messages/", message_body())
    world.is_active = False  # a new message through this sender would be refused now
    world.save(update_fields=["is_active"])
    again = post(staff_api, "/api/v1/messages/", message_body())
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])


def test_every_endpoint_taking_the_header_documents_the_422(staff_api):
    schema = staff_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    taking = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
            if any(p["name"] == "Idempotency-Key" for p in headers):
                taking.add((method, path))
                assert "422" in operation["responses"], (method, path)
    assert {("post", "/api/v1/messages/"), ("post", "/api/v1/events/")} <= taking


# --- Two requests with one key at the same moment ----------------------------------------------


def _superuser_client() -> APIClient:
    client = APIClient()
    client.force_authenticate(UserFactory(username=f"root-{uuid.uuid4().hex[:6]}", is_superuser=True))
    return client


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("racing_text", "expected"), [("Your code is 1234", 200), ("Your code is 9999", 422)])
def test_a_message_request_racing_an_uncommitted_one_is_its_replay_or_a_conflict(racing_text, expected):
    """The racing insert waits on the unique key; once the first commits it compares the bodies."""
    sender = SenderFactory()
    audience.contact_create(phone=PHONE, name="Amina")
    contact = Contact.objects.get(phone=PHONE)
    client = _superuser_client()
    result = {}

    def racer():
        try:
            response = post(client, "/api/v1/messages/", message_body(racing_text), key="racing")
            result["response"] = (response.status_code, response.json())
        finally:
            connection.close()

    with transaction.atomic():
        # Past the replay check (nothing committed yet): the thread reaches the insert and waits.
        first, created = create.message_create(
            contact=contact,
            body="Your code is 1234",
            sender=sender,
            idempotency_key="racing",
            request_hash=request_fingerprint(message_body()),
            enqueue=False,
        )
        thread = threading.Thread(target=racer)
        thread.start()
        deadline = time.monotonic() + 10
        while not _someone_waits_for_a_lock() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _someone_waits_for_a_lock(), "the racing request never reached the unique key"
    thread.join(timeout=30)
    status, body = result["response"]
    assert created and status == expected
    if expected == 200:
        assert body["id"] == first.pk
    else:
        assert f"message {first.pk}" in body["Idempotency-Key"][0]
    assert Message.objects.count() == 1
