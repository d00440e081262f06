from urllib.parse import urlencode

import pytest
from django.test import Client as DjangoClient

from messaging.models import Message, MessageStatus, MessageTemplate, Sender
from messaging.services import create, send
from tests.factories import ContactFactory
from tests.fake_twilio import FakeTwilio

pytestmark = pytest.mark.django_db

SID = "AC" + "3d" * 16
TOKEN = "api-test-token"
PUBLIC = "https://platform.example.com"


@pytest.fixture
def sms_sender(db):
    return Sender.objects.create(name="sms", channel="sms", kind="long_code", from_address="+15005550006")


# --- templates -----------------------------------------------------------------------------


def test_staff_create_templates_and_analysts_only_read(staff_api, analyst_api):
    payload = {"name": "welcome", "channel": "sms", "body": "Hi {{ name }}", "fallbacks": {"name": "there"}}
    created = staff_api.post("/api/v1/templates/", payload, format="json")
    assert created.status_code == 201, created.content
    assert analyst_api.get("/api/v1/templates/").json()[0]["name"] == "welcome"
    assert analyst_api.post("/api/v1/templates/", {**payload, "name": "x"}, format="json").status_code == 403
    pk = created.json()["id"]
    assert analyst_api.patch(f"/api/v1/templates/{pk}/", {"body": "x"}, format="json").status_code == 403
    assert staff_api.patch(f"/api/v1/templates/{pk}/", {"body": "Hello {{ name }}"}, format="json").status_code == 200
    assert MessageTemplate.objects.get(pk=pk).body == "Hello {{ name }}"


def test_unknown_placeholders_are_refused_by_the_api(staff_api):
    response = staff_api.post(
        "/api/v1/templates/", {"name": "bad", "channel": "sms", "body": "Hi {{ first_name }}"}, format="json"
    )
    assert response.status_code == 400
    assert "first_name" in response.json()["body"][0]
    created = staff_api.post("/api/v1/templates/", {"name": "ok", "channel": "sms", "body": "Hi"}, format="json")
    pk = created.json()["id"]
    response = staff_api.patch(f"/api/v1/templates/{pk}/", {"body": "{{ x.y.z }}"}, format="json")
    assert response.status_code == 400 and "x.y.z" in response.json()["body"][0]


def test_preview_against_a_contact_or_sample_values(staff_api, analyst_api):
    template = MessageTemplate.objects.create(name="p", channel="sms", body="Hi {{ name }} from {{ attributes.city }}")
    contact = ContactFactory(name="Amina", attributes={"city": "Nairobi"})
    url = f"/api/v1/templates/{template.pk}/preview"
    response = analyst_api.post(url, {"contact": contact.pk}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == "Hi Amina from Nairobi"
    assert (body["missing_variables"], body["segments"], body["encoding"]) == ([], 1, "GSM-7")
    body = staff_api.post(url, {"sample": {"name": "Ngũgĩ"}}, format="json").json()
    assert body["missing_variables"] == ["attributes.city"] and body["encoding"] == "UCS-2"
    assert body["skip_reason"] == "missing variable attributes.city"
    assert staff_api.post(url, {}, format="json").status_code == 400


def test_preview_of_a_whatsapp_content_template_gives_content_variables(staff_api):
    template = MessageTemplate.objects.create(
        name="wa",
        channel="whatsapp",
        body="Hi {{ name }}",
        content_sid="HX" + "c" * 32,
        content_variables={"1": "name", "2": "attributes.code"},
    )
    url = f"/api/v1/templates/{template.pk}/preview"
    body = staff_api.post(url, {"sample": {"name": "Amina", "attributes.code": 1234}}, format="json").json()
    assert body["content_variables"] == {"1": "Amina", "2": "1234"}
    assert body["segments"] is None


# --- senders -------------------------------------------------------------------------------


def test_senders_are_listed_with_their_effective_mps(analyst_api, sms_sender):
    Sender.objects.create(name="wa", channel="whatsapp", kind="whatsapp", from_address="whatsapp:+15005550007", mps=200)
    listed = {row["name"]: row for row in analyst_api.get("/api/v1/senders/").json()}
    assert listed["sms"]["effective_mps"] == 10 and listed["sms"]["mps"] is None
    assert listed["wa"]["effective_mps"] == 200
    assert analyst_api.post("/api/v1/senders/", {"name": "x"}, format="json").status_code == 403


def test_staff_create_and_update_senders_with_valid_addresses(staff_api):
    good = {"name": "tf", "channel": "sms", "kind": "toll_free", "from_address": "+18005550100"}
    created = staff_api.post("/api/v1/senders/", good, format="json")
    assert created.status_code == 201 and created.json()["effective_mps"] == 3
    bad = staff_api.post(
        "/api/v1/senders/",
        {"name": "wa", "channel": "whatsapp", "kind": "whatsapp", "from_address": "+15005550007"},
        format="json",
    )
    assert bad.status_code == 400 and "whatsapp:+E.164" in bad.json()["from_address"][0]
    pk = created.json()["id"]
    assert staff_api.patch(f"/api/v1/senders/{pk}/", {"from_address": "12"}, format="json").status_code == 400
    assert staff_api.patch(f"/api/v1/senders/{pk}/", {"mps": 25}, format="json").json()["effective_mps"] == 25


# --- messages ------------------------------------------------------------------------------


def test_post_message_answers_202_and_enqueues_after_commit(staff_api, sms_sender, django_capture_on_commit_callbacks):
    contact = ContactFactory(phone="+254711200001")
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_api.post(
            "/api/v1/messages/", {"contact": contact.pk, "body": "Your code is 1234"}, format="json"
        )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending" and response.json()["sender"] == sms_sender.pk
    assert len(callbacks) == 1


def test_an_idempotency_key_replay_returns_the_first_message_and_sends_nothing(
    staff_api, sms_sender, django_capture_on_commit_callbacks
):
    contact = ContactFactory(phone="+254711200002")
    payload = {"phone": "whatsapp:+254 711 200 002", "body": "Hello"}
    with django_capture_on_commit_callbacks() as first_callbacks:
        first = staff_api.post("/api/v1/messages/", payload, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    with django_capture_on_commit_callbacks() as second_callbacks:
        second = staff_api.post("/api/v1/messages/", payload, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Message.objects.filter(contact=contact).count() == 1
    assert (len(first_callbacks), len(second_callbacks)) == (1, 0)


def test_post_message_validates_its_input(staff_api, analyst_api, sms_sender):
    contact = ContactFactory(phone="+254711200003")
    template = MessageTemplate.objects.create(name="wa", channel="whatsapp", body="Hi")
    post = staff_api.post
    assert post("/api/v1/messages/", {"contact": contact.pk}, format="json").status_code == 400
    assert post("/api/v1/messages/", {"phone": "+254711999999", "body": "x"}, format="json").status_code == 400
    mismatch = post(
        "/api/v1/messages/", {"contact": contact.pk, "template": template.pk, "sender": sms_sender.pk}, format="json"
    )
    assert mismatch.status_code == 400 and "sender" in mismatch.json()
    no_sender = post("/api/v1/messages/", {"contact": contact.pk, "template": template.pk}, format="json")
    assert no_sender.status_code == 400 and "no active whatsapp sender" in no_sender.json()["sender"][0]
    assert analyst_api.post("/api/v1/messages/", {"contact": contact.pk, "body": "x"}, format="json").status_code == 403
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("contact", 10**9, 'Invalid pk "1000000000" - object does not exist.'),
        ("template", 10**9, 'Invalid pk "1000000000" - object does not exist.'),
        ("sender", 10**9, 'Invalid pk "1000000000" - object does not exist.'),
        ("sender", 2**70, f'Invalid pk "{2**70}" - object does not exist.'),
        ("contact", -1, 'Invalid pk "-1" - object does not exist.'),
        ("template", True, "Incorrect type. Expected pk value, received bool."),
        ("sender", "seven", "Incorrect type. Expected pk value, received str."),
        ("contact", [1], "Incorrect type. Expected pk value, received list."),
        ("template", 1.5, "Incorrect type. Expected pk value, received float."),
    ],
)
def test_a_message_naming_a_missing_or_malformed_row_is_a_400_naming_the_field(
    staff_api, sms_sender, field, value, error
):
    template = MessageTemplate.objects.create(name="otp", channel="sms", body="Code for {{ name }}")
    body = {"contact": ContactFactory().pk, "template": template.pk, "sender": sms_sender.pk, field: value}
    answer = staff_api.post("/api/v1/messages/", body, format="json")
    assert answer.status_code == 400 and answer.json() == {field: [error]}
    assert not Message.objects.exists()


def test_a_message_is_rendered_from_the_rows_read_in_one_statement(staff_api, sms_sender):
    """The contact's attributes and the template's fallbacks (JSON columns) arrive as values, not text."""
    contact = ContactFactory(name="", attributes={"plan": "gold"})
    template = MessageTemplate.objects.create(
        name="plan", channel="sms", body="{{ name }}, your {{ attributes.plan }} plan", fallbacks={"name": "Friend"}
    )
    body = {"contact": str(contact.pk), "template": template.pk, "sender": sms_sender.pk}
    answer = staff_api.post("/api/v1/messages/", body, format="json")
    assert answer.status_code == 202, answer.content
    message = Message.objects.get(pk=answer.json()["id"])
    assert (message.contact, message.template, message.sender) == (contact, template, sms_sender)
    assert message.to_address == contact.phone and message.from_address == sms_sender.from_address
    send.message_send(message.pk)
    message.refresh_from_db()
    assert message.body == "Friend, your gold plan"


@pytest.fixture
def fake(settings):
    with FakeTwilio(
        account_sid=SID, auth_token=TOKEN, callbacks="manual", out_of_order=True, duplicates=True
    ) as server:
        settings.MESSAGING_PROVIDER = "twilio"
        settings.TWILIO_ACCOUNT_SID = SID
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.TWILIO_API_BASE_URL = server.base_url
        settings.PUBLIC_BASE_URL = PUBLIC
        yield server


def test_an_api_message_ends_up_delivered_through_signed_callbacks(staff_api, analyst_api, sms_sender, fake):
    """Done means: sent through the API with MESSAGING_PROVIDER=twilio at the fake server, delivered by callbacks."""
    contact = ContactFactory(phone="+254711200004")
    response = staff_api.post("/api/v1/messages/", {"contact": contact.pk, "body": "Hello"}, format="json")
    message_id = response.json()["id"]
    send.message_send(message_id)  # what the enqueued task runs
    webhook = DjangoClient()

    def post(url, params, signature):
        assert url.startswith(PUBLIC)
        return webhook.post(
            url[len(PUBLIC) :],
            urlencode(params),
            content_type="application/x-www-form-urlencoded",
            HTTP_X_TWILIO_SIGNATURE=signature,
        ).status_code

    statuses = fake.deliver_callbacks(post)  # delivered before sent, each twice
    assert statuses and all(200 <= code < 300 for code in statuses)
    detail = analyst_api.get(f"/api/v1/messages/{message_id}").json()
    assert detail["status"] == MessageStatus.DELIVERED
    assert detail["delivered_at"] and detail["sent_at"]
    assert sorted(event["status"] for event in detail["history"]) == ["delivered", "sent"]
    assert fake.requests_to(contact.phone) == 1


def test_messages_list_filters_by_status(analyst_api, sms_sender):
    contact = ContactFactory(phone="+254711200005")
    create.message_create(contact=contact, sender=sms_sender, body="a", enqueue=False)
    skipped, _ = create.message_create(contact=contact, sender=sms_sender, body="b", enqueue=False)
    Message.objects.filter(pk=skipped.pk).update(status=MessageStatus.SKIPPED)
    rows = analyst_api.get("/api/v1/messages/", {"status": "skipped"}).json()["results"]
    assert [row["id"] for row in rows] == [skipped.pk]
