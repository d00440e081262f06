"""POST/GET /api/v1/events/: idempotency (replays, conflicts, concurrency), 400s naming the field, roles."""

import threading
import time
import uuid

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from audience import services as audience
from audience.models import Contact
from campaigns import services
from campaigns.models import Campaign, CampaignRun, Event, Recipient
from campaigns.services import events
from config.idempotency import request_fingerprint
from tests.factories import MessageTemplateFactory, SenderFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/events/"
PHONE = "+254713000001"


@pytest.fixture
def campaign():
    audience.contact_create(phone=PHONE, name="Amina")
    template = MessageTemplateFactory(body="Order {{ event.order_id }} shipped")
    campaign = services.campaign_create(
        name="Shipped", kind="triggered", template=template, sender=SenderFactory(), trigger_event="order_shipped"
    )
    services.campaign_launch(campaign)
    return campaign


def body(**overrides):
    return {"contact": PHONE, "name": "order_shipped", "properties": {"order_id": "A-17"}, **overrides}


def post(client, data, key="key-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(URL, data, format="json", **headers)


def test_an_event_is_stored_and_answered(staff_api, campaign):
    response = post(staff_api, body(occurred_at="2026-11-27T10:00:00+03:00"))
    assert response.status_code == 201, response.json()
    data = response.json()
    event = Event.objects.get()
    assert data["id"] == event.pk and data["matched_campaigns"] == [campaign.pk]
    assert (data["contact"], data["name"], data["properties"]) == (
        event.contact_id,
        "order_shipped",
        {"order_id": "A-17"},
    )
    assert data["occurred_at"] == "2026-11-27T07:00:00Z"
    recipient = Recipient.objects.get(event=event)
    assert recipient.state == "pending" and recipient.message.render_context == {"order_id": "A-17"}


def test_a_new_event_looks_its_key_up_once(staff_api, campaign):
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = post(staff_api, body())
    assert response.status_code == 201, response.json()
    lookups = [q["sql"] for q in queries if 'WHERE "campaigns_event"."idempotency_key" =' in q["sql"]]
    assert len(lookups) == 1, lookups


@pytest.mark.parametrize("spelling", ["whatsapp:+254 713 000 001", "00254713000001", "+254-713-000-001"])
def test_the_contact_may_be_a_phone_in_any_common_spelling(staff_api, campaign, spelling):
    response = post(staff_api, body(contact=spelling))
    assert response.status_code == 201, response.json()
    assert response.json()["contact"] == Contact.objects.get(phone=PHONE).pk


def test_the_contact_may_be_an_id(staff_api, campaign):
    contact = Contact.objects.get(phone=PHONE)
    assert post(staff_api, body(contact=contact.pk)).json()["contact"] == contact.pk


def test_a_replay_returns_the_first_result_and_sends_nothing_new(
    staff_api, campaign, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as first_callbacks:
        first = post(staff_api, body())
    with django_capture_on_commit_callbacks() as replay_callbacks:
        replay = post(staff_api, body())
    assert (replay.status_code, replay.json()) == (first.status_code, first.json()) == (201, first.json())
    assert Event.objects.count() == 1 and Recipient.objects.count() == 1
    assert len(first_callbacks) == 1 and replay_callbacks == []  # the dispatcher is started once
    run = CampaignRun.objects.get(campaign=campaign)
    assert (run.total, run.pending) == (1, 1)


def test_the_same_key_with_another_body_is_refused(staff_api, campaign):
    post(staff_api, body())
    response = post(staff_api, body(properties={"order_id": "B-2"}))
    assert response.status_code == 422
    assert "different request" in response.json()["Idempotency-Key"][0]
    assert Event.objects.count() == 1 and Recipient.objects.count() == 1


def test_the_idempotency_key_is_required(staff_api, campaign):
    response = post(staff_api, body(), key=None)
    assert response.status_code == 400
    assert "required" in response.json()["Idempotency-Key"][0]
    assert post(staff_api, body(), key="x" * 256).status_code == 400
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"contact": 999_999}, "contact", "no contact with id 999999"),
        ({"contact": "+254799999999"}, "contact", "no contact with phone +254799999999"),
        ({"contact": "not a phone"}, "contact", "not a phone number"),
        ({"contact": True}, "contact", "a contact id"),
        ({"name": ""}, "name", "blank"),
        ({"name": None}, "name", "null"),
        ({"properties": ["a", "b"]}, "properties", "JSON object"),
        ({"properties": "text"}, "properties", "JSON object"),
        ({"occurred_at": "yesterday-ish"}, "occurred_at", "Datetime has wrong format"),
    ],
)
def test_a_malformed_event_is_a_400_naming_the_field(staff_api, campaign, overrides, field, text):
    response = post(staff_api, body(**overrides))
    assert response.status_code == 400
    assert text in " ".join(response.json()[field])
    assert not Event.objects.exists()


def test_a_missing_name_is_named(staff_api, campaign):
    data = body()
    del data["name"]
    assert "name" in post(staff_api, data).json()


def test_a_refused_request_does_not_use_up_its_key(staff_api, campaign):
    assert post(staff_api, body(contact="+254799999999")).status_code == 400
    assert post(staff_api, body()).status_code == 201


def test_analysts_read_but_may_not_post(analyst_api, staff_api, campaign):
    post(staff_api, body())
    assert post(analyst_api, body(), key="key-2").status_code == 403
    assert analyst_api.get(URL).status_code == 200
    assert Event.objects.count() == 1


def test_anonymous_requests_are_refused(anon_api, campaign):
    assert post(anon_api, body()).status_code == 401
    assert anon_api.get(URL).status_code == 401


def test_the_list_filters_by_name_contact_campaign_and_dates(staff_api, campaign):
    other = audience.contact_create(phone="+254713000002", name="B")
    post(staff_api, body(occurred_at="2026-11-01T00:00:00Z"), key="a")
    post(staff_api, body(contact=other.pk, name="cart_abandoned", occurred_at="2026-11-20T00:00:00Z"), key="b")

    def names(query):
        response = staff_api.get(URL + query)
        assert response.status_code == 200
        return sorted(item["name"] for item in response.json()["results"])

    assert names("") == ["cart_abandoned", "order_shipped"]
    assert names("?name=cart_abandoned") == ["cart_abandoned"]
    assert names(f"?contact={other.pk}") == ["cart_abandoned"]
    assert names(f"?campaign={campaign.pk}") == ["order_shipped"]
    assert names("?occurred_after=2026-11-10T00:00:00Z") == ["cart_abandoned"]
    assert names("?occurred_before=2026-11-10T00:00:00Z") == ["order_shipped"]


def test_an_event_can_be_read_back(staff_api, campaign):
    created = post(staff_api, body()).json()
    assert staff_api.get(f"{URL}{created['id']}/").json() == created


# --- Concurrency: one key, two requests at the same moment ------------------------------------


def _superuser_client() -> APIClient:
    client = APIClient()
    client.force_authenticate(UserFactory(username=f"root-{uuid.uuid4().hex[:6]}", is_superuser=True))
    return client


def _triggered_campaign() -> Campaign:
    audience.contact_create(phone=PHONE, name="Amina")
    template = MessageTemplateFactory(body="Order {{ event.order_id }} shipped")
    campaign = services.campaign_create(
        name="Shipped", kind="triggered", template=template, sender=SenderFactory(), trigger_event="order_shipped"
    )
    services.campaign_launch(campaign)
    return campaign


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_requests_with_one_key_make_one_event():
    _triggered_campaign()
    clients = [_superuser_client(), _superuser_client()]
    barrier = threading.Barrier(2)
    responses, errors = [], []

    def send(client):
        try:
            barrier.wait()
            response = post(client, body(), key="same")
            responses.append((response.status_code, response.json()))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(responses) == 2 and responses[0] == responses[1] and responses[0][0] == 201
    assert Event.objects.count() == 1 and Recipient.objects.count() == 1
    assert CampaignRun.objects.get().total == 1


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_a_request_racing_an_uncommitted_one_replays_it_once_it_commits():
    """The second insert waits on the unique key; once the first commits it returns the first event."""
    campaign = _triggered_campaign()
    contact = Contact.objects.get(phone=PHONE)
    client = _superuser_client()
    result = {}

    def racer():
        try:
            response = post(client, body(), key="racing")
            result["response"] = (response.status_code, response.json())
        finally:
            connection.close()

    with transaction.atomic():
        first, created = events.event_record(
            contact=contact,
            name="order_shipped",
            properties={"order_id": "A-17"},
            idempotency_key="racing",
            request_hash=request_fingerprint(body()),
        )
        thread = threading.Thread(target=racer)
        thread.start()
        deadline = time.monotonic() + 10
        while not _someone_waits_for_a_lock() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _someone_waits_for_a_lock(), "the racing request never reached the unique key"
    thread.join(timeout=30)
    assert created and result["response"][0] == 201
    assert result["response"][1]["id"] == first.pk
    assert result["response"][1]["matched_campaigns"] == [campaign.pk]
    assert Event.objects.count() == 1 and Recipient.objects.count() == 1


def test_a_triggered_campaign_is_created_through_the_api_and_its_trigger_validated(staff_api):
    template, sender = MessageTemplateFactory(body="Hi"), SenderFactory()
    data = {"name": "Big orders", "kind": "triggered", "template": template.pk, "sender": sender.pk}
    bad = staff_api.post(
        "/api/v1/campaigns/",
        {**data, "trigger_event": "order_paid", "trigger_conditions": [{"property": "total", "op": "gte"}]},
        format="json",
    )
    assert bad.status_code == 400 and "[0].value" in bad.json()["trigger_conditions"][0]
    good = staff_api.post(
        "/api/v1/campaigns/",
        {
            **data,
            "trigger_event": "order_paid",
            "trigger_conditions": [{"property": "total", "op": "gte", "value": 100}],
            "trigger_contact_rule": "age >= 18",
        },
        format="json",
    )
    assert good.status_code == 201, good.json()
    assert good.json()["trigger_contact_rule"] == {"field": "attributes.age", "op": "gte", "value": 18}


def test_analysts_see_phones_and_emails_in_event_properties_masked(analyst_api, staff_api, campaign):
    properties = {"order": "A1", "callback": "+254712345678", "email": "wanjiru@example.org"}
    post(staff_api, body(properties=properties))
    shown = analyst_api.get(URL).json()["results"][0]["properties"]
    assert shown["order"] == "A1" and "+254712345678" not in str(shown) and "wanjiru@example.org" not in str(shown)
    assert staff_api.get(URL).json()["results"][0]["properties"] == properties
