"""A free-text body is rendered for its contact exactly like a template, never sent with a placeholder.

Same renderer, same fallbacks rule (a free-text body has none), same missing-variable refusal:
a 400 naming the variable when the contact lacks it at request time, a skip with the reason when
it only goes missing before the send. Sends go through the real twilio client to the fake Twilio.
"""

import pytest

from messaging.models import Message, MessageStatus, MessageTemplate, Sender
from messaging.services import create, send
from tests.factories import ContactFactory
from tests.fake_twilio import FakeTwilio

pytestmark = pytest.mark.django_db

SID = "AC" + "5b" * 16
TOKEN = "free-text-test-token"
URL = "/api/v1/messages/"


@pytest.fixture
def fake(settings):
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="off") as server:
        settings.MESSAGING_PROVIDER = "twilio"
        settings.TWILIO_ACCOUNT_SID = SID
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.TWILIO_API_BASE_URL = server.base_url
        yield server


@pytest.fixture
def sender(db):
    return Sender.objects.create(
        name="sms", channel="sms", kind="long_code", provider="twilio", from_address="+15005550006"
    )


def sent_body(fake, message: Message) -> str:
    message.refresh_from_db()
    return fake.request_form(message.provider_sid)["Body"]


def test_a_free_text_body_is_sent_rendered_for_its_contact(staff_api, fake, sender):
    contact = ContactFactory(phone="+254711300001", name="Amina", attributes={"city": "Nairobi"})
    text = "Hi {{ name }} in {{attributes.city}}, your code is {{ event.code }}"
    response = staff_api.post(URL, {"contact": contact.pk, "body": text, "context": {"code": 1234}}, format="json")
    assert response.status_code == 202, response.json()
    message = send.message_send(response.json()["id"])
    assert message.status == MessageStatus.QUEUED
    assert sent_body(fake, message) == "Hi Amina in Nairobi, your code is 1234"
    assert (message.body, message.body_source) == ("Hi Amina in Nairobi, your code is 1234", text)


def test_a_free_text_body_and_a_template_with_the_same_text_render_the_same(fake, sender):
    contact = ContactFactory(phone="+254711300002", name="Ngũgĩ")
    template = MessageTemplate.objects.create(name="hi", channel="sms", body="Hi {{ name }}, ready?")
    by_text, _ = create.message_create(contact=contact, body=template.body, sender=sender, enqueue=False)
    by_template, _ = create.message_create(contact=contact, template=template, sender=sender, enqueue=False)
    by_text, by_template = send.message_send(by_text.pk), send.message_send(by_template.pk)
    assert sent_body(fake, by_text) == sent_body(fake, by_template) == "Hi Ngũgĩ, ready?"
    assert (by_text.segments, by_text.encoding) == (by_template.segments, by_template.encoding) == (1, "UCS-2")


@pytest.mark.parametrize(
    ("body", "context", "named"),
    [
        ("Hi {{ name }}", None, "missing variable name"),
        ("Your {{ attributes.plan }} plan", None, "missing variable attributes.plan"),
        ("Order {{ event.order_id }}", {"other": 1}, "missing variable event.order_id"),
        ("Hi {{ first_name }}", None, "unknown placeholder(s): first_name"),
    ],
)
def test_a_placeholder_the_contact_cannot_fill_is_a_400_naming_it(staff_api, fake, sender, body, context, named):
    contact = ContactFactory(phone="+254711300003", name="", attributes={})
    data = {"contact": contact.pk, "body": body, **({"context": context} if context else {})}
    response = staff_api.post(URL, data, format="json")
    assert response.status_code == 400
    assert named in response.json()["body"][0]
    assert not Message.objects.exists() and fake.stats()["requests"] == 0


def test_a_template_missing_a_variable_is_refused_the_same_way(staff_api, sender):
    template = MessageTemplate.objects.create(name="city", channel="sms", body="Hi from {{ attributes.city }}")
    contact = ContactFactory(phone="+254711300004", attributes={})
    response = staff_api.post(URL, {"contact": contact.pk, "template": template.pk}, format="json")
    assert response.status_code == 400
    assert "missing variable attributes.city" in response.json()["template"][0]
    template.fallbacks = {"attributes.city": "our town"}
    template.save(update_fields=["fallbacks"])
    assert staff_api.post(URL, {"contact": contact.pk, "template": template.pk}, format="json").status_code == 202


def test_a_value_gone_before_the_send_skips_the_message_with_its_name(fake, sender):
    contact = ContactFactory(phone="+254711300005", name="Amina")
    message, _ = create.message_create(contact=contact, body="Hi {{ name }}", sender=sender, enqueue=False)
    contact.name = ""
    contact.save(update_fields=["name"])
    message = send.message_send(message.pk)
    assert (message.status, message.skip_reason) == (MessageStatus.SKIPPED, "missing variable name")
    assert fake.stats()["requests"] == 0


def test_every_attempt_renders_the_body_as_written_for_the_contact_as_it_is_then(fake, sender):
    contact = ContactFactory(phone="+254711300006", name="Amina")
    message, _ = create.message_create(contact=contact, body="Hi {{ name }}", sender=sender, enqueue=False)
    fake.fail(contact.phone, "503")
    message = send.message_send(message.pk)
    assert message.status == MessageStatus.PENDING and message.body == "Hi Amina"
    contact.name = "{{ email }}"  # a value is text, never a placeholder rendered again
    contact.save(update_fields=["name"])
    Message.objects.filter(pk=message.pk).update(next_attempt_at=None)
    message = send.message_send(message.pk)
    assert message.status == MessageStatus.QUEUED
    assert sent_body(fake, message) == "Hi {{ email }}"
    assert message.body_source == "Hi {{ name }}"
