"""The inbound webhook: signed recorded-shape messages in, TwiML out."""

import pytest

from audience.models import ConsentEvent, ConsentStatus, Contact
from messaging.models import Message
from tests.factories import ContactFactory
from tests.twilio_webhooks import INBOUND_PATH, PUBLIC, TOKEN, inbound_payload, post_form, post_json

pytestmark = pytest.mark.django_db

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
PHONE = "+254712345678"


@pytest.fixture(autouse=True)
def twilio_settings(settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.HELP_REPLY_TEXT = "Acme alerts: reply STOP to stop, START to resume. Help: acme.example/help & more"


def sid(n: int) -> str:
    return f"SM{n:032x}"


def test_a_message_gets_empty_twiml_and_is_stored(client):
    response = post_form(client, INBOUND_PATH, inbound_payload(sid(1), "When do you open?"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert response.content == EMPTY_TWIML
    message = Message.objects.get(provider_sid=sid(1))
    assert message.body == "When do you open?" and message.contact.phone == PHONE


def test_stop_opts_out_and_gets_no_chatty_reply(client):
    contact = ContactFactory(phone=PHONE)
    response = post_form(client, INBOUND_PATH, inbound_payload(sid(2), "Stop"))
    assert response.content == EMPTY_TWIML
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_OUT
    assert ConsentEvent.objects.get(contact=contact).evidence == {"message_sid": sid(2), "keyword": "STOP"}


def test_a_replayed_stop_is_idempotent(client):
    contact = ContactFactory(phone=PHONE)
    payload = inbound_payload(sid(3), "STOP")
    assert post_form(client, INBOUND_PATH, payload).status_code == 200
    assert post_form(client, INBOUND_PATH, payload).status_code == 200
    assert Message.objects.count() == 1
    assert ConsentEvent.objects.filter(contact=contact).count() == 1


@pytest.mark.parametrize("word", ["HELP", "info", " Help "])
def test_help_gets_the_configured_reply(client, word):
    response = post_form(client, INBOUND_PATH, inbound_payload(sid(4), word))
    assert response.status_code == 200 and response["Content-Type"] == "text/xml"
    assert response.content == (
        b'<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
        b"Acme alerts: reply STOP to stop, START to resume. Help: acme.example/help &amp; more"
        b"</Message></Response>"
    )


def test_help_please_is_not_a_keyword(client):
    assert post_form(client, INBOUND_PATH, inbound_payload(sid(5), "help please")).content == EMPTY_TWIML


def test_whatsapp_json_variant_creates_the_contact(client):
    response = post_json(client, INBOUND_PATH, inbound_payload(sid(6), "Hi!", phone="+254733000777", whatsapp=True))
    assert response.status_code == 200
    contact = Contact.objects.get(phone="+254733000777")
    assert contact.channel == "whatsapp" and contact.last_inbound_at is not None
    assert Message.objects.get(provider_sid=sid(6)).from_address == "whatsapp:+254733000777"


def test_an_inbound_without_from_gets_400(client):
    payload = inbound_payload(sid(7), "hello")
    del payload["From"]
    assert post_form(client, INBOUND_PATH, payload).status_code == 400
    assert not Message.objects.exists()


def test_an_oversized_body_field_gets_400(client):
    assert post_form(client, INBOUND_PATH, inbound_payload(sid(8), "x" * 10_001)).status_code == 400
    assert not Message.objects.exists()


def test_media_fields_are_kept(client):
    payload = inbound_payload(
        sid(9), "", NumMedia="1", MediaUrl0="https://api.twilio.com/media/ME1", MediaContentType0="image/png"
    )
    assert post_form(client, INBOUND_PATH, payload).status_code == 200
    message = Message.objects.get(provider_sid=sid(9))
    assert message.media == [{"url": "https://api.twilio.com/media/ME1", "content_type": "image/png"}]
