"""The status webhook with recorded-shape signed payloads, form and JSON."""

import hashlib
import json

import pytest

from messaging.models import Message, MessageStatus, ProviderCallback
from tests.twilio_webhooks import PUBLIC, SID, STATUS_PATH, TOKEN, post_form, post_json, signature, status_payload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def twilio_settings(settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.PUBLIC_BASE_URL = PUBLIC


@pytest.fixture
def message():
    return Message.objects.create(channel="whatsapp", provider_sid=SID, status=MessageStatus.QUEUED)


def test_a_signed_form_callback_is_stored_and_moves_the_message(client, message):
    response = post_form(client, STATUS_PATH, status_payload(SID, "delivered", whatsapp=True))
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED and message.delivered_at is not None
    event = ProviderCallback.objects.get()
    assert (event.kind, event.provider_sid, event.status, event.message_id) == ("status", SID, "delivered", message.pk)
    assert event.payload == status_payload(SID, "delivered", whatsapp=True)


def test_a_failed_callback_records_its_error_code(client, message):
    response = post_form(client, STATUS_PATH, status_payload(SID, "undelivered", error_code="30007"))
    assert response.status_code == 200
    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.UNDELIVERED, "30007")
    assert message.error_message == "Filtered by the carrier"
    assert ProviderCallback.objects.get().error_code == "30007"


def test_the_json_variant_with_body_sha256_is_accepted(client, message):
    response = post_json(client, STATUS_PATH, status_payload(SID, "read", whatsapp=True))
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == MessageStatus.READ


def test_a_json_body_that_does_not_match_its_hash_is_refused(client, message):
    tampered = json.dumps(status_payload(SID, "failed", error_code="30008"))
    response = post_json(client, STATUS_PATH, status_payload(SID, "read"), body=tampered)
    assert response.status_code == 403
    assert not ProviderCallback.objects.exists()
    assert Message.objects.get().status == MessageStatus.QUEUED


def test_a_replayed_callback_answers_200_and_changes_nothing(client, message):
    payload = status_payload(SID, "sent")
    assert post_form(client, STATUS_PATH, payload).status_code == 200
    message.refresh_from_db()
    stamped = (message.sent_at, message.updated_at)
    assert post_form(client, STATUS_PATH, payload).status_code == 200
    message.refresh_from_db()
    assert ProviderCallback.objects.count() == 1
    assert (message.sent_at, message.updated_at) == stamped


def test_out_of_order_and_duplicated_callbacks_end_delivered(client, message):
    for status in ("delivered", "sent", "delivered", "queued", "sent"):
        assert post_form(client, STATUS_PATH, status_payload(SID, status)).status_code == 200
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert ProviderCallback.objects.count() == 3


def test_a_callback_for_a_sid_not_saved_yet_is_kept_for_later(client):
    response = post_form(client, STATUS_PATH, status_payload(SID, "delivered"))
    assert response.status_code == 200
    event = ProviderCallback.objects.get()
    assert event.applied_at is None and event.message_id is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"MessageSid": None, "SmsSid": None}, "MessageSid"),
        ({"MessageSid": "not a sid!", "SmsSid": "not a sid!"}, "MessageSid"),
        ({"MessageStatus": "teleported", "SmsStatus": "teleported"}, "MessageStatus"),
        ({"MessageStatus": None, "SmsStatus": None}, "MessageStatus"),
        ({"ErrorCode": "3000x"}, "ErrorCode"),
        ({"ErrorCode": "1" * 40}, "ErrorCode"),
        ({"From": "+1" + "5" * 100}, "From"),
        ({"RawDlrDoneDate": "x" * 5000}, "RawDlrDoneDate"),
    ],
)
def test_malformed_payloads_get_400_and_store_nothing(client, message, change, reason):
    payload = {key: value for key, value in {**status_payload(SID, "delivered"), **change}.items() if value is not None}
    response = post_form(client, STATUS_PATH, payload)
    assert response.status_code == 400
    assert reason in response.content.decode()
    assert not ProviderCallback.objects.exists()
    assert Message.objects.get().status == MessageStatus.QUEUED


def test_an_oversized_body_gets_400(client, message):
    payload = status_payload(SID, "delivered") | {"Padding": "x" * 70_000}
    assert post_form(client, STATUS_PATH, payload).status_code == 400
    assert not ProviderCallback.objects.exists()


def test_a_json_body_that_is_not_an_object_gets_400(client):
    body = json.dumps(["MessageSid", SID])
    path = f"{STATUS_PATH}?bodySHA256={hashlib.sha256(body.encode()).hexdigest()}"
    response = client.post(
        path, data=body, content_type="application/json", headers={"X-Twilio-Signature": signature(PUBLIC + path)}
    )
    assert response.status_code == 400
    assert not ProviderCallback.objects.exists()


def test_a_json_body_without_body_sha256_gets_400(client, message):
    params = status_payload(SID, "delivered")
    response = client.post(
        STATUS_PATH,
        data=json.dumps(params),
        content_type="application/json",
        headers={"X-Twilio-Signature": signature(PUBLIC + STATUS_PATH, params)},
    )
    assert response.status_code == 400
    assert not ProviderCallback.objects.exists()


def test_only_post_is_allowed(client):
    assert client.get(STATUS_PATH).status_code == 405
