"""The SMS parts a preview or a cost estimate counts are those of the body handed to Twilio: a tracked
URL counts as its short link, an opted-out one (or any, with tracking off) as written."""

import pytest

from campaigns import services
from campaigns.models import Campaign
from messaging.models import MessageTemplate, Sender
from messaging.rendering import sms_segments
from messaging.services import create, send
from messaging.services.templates import template_preview
from tests.factories import ContactFactory
from tests.fake_twilio import FakeTwilio

pytestmark = pytest.mark.django_db

SID = "AC" + "5e" * 16
TOKEN = "segments-test-token"
LONG_URL = (
    "https://shop.example.com/collections/spring-sale-2026/womens-running-shoes"
    "?colour=green&size=42&ref=newsletter-footer&campaign=spring"
)


@pytest.fixture
def fake(settings):
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="off") as server:
        settings.MESSAGING_PROVIDER = "twilio"
        settings.TWILIO_ACCOUNT_SID = SID
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.TWILIO_API_BASE_URL = server.base_url
        settings.PUBLIC_BASE_URL = "https://go.example.org"
        yield server


@pytest.fixture
def sender(db):
    return Sender.objects.create(
        name="sms", channel="sms", kind="long_code", provider="twilio", from_address="+15005550006"
    )


def sent_body(fake, contact, template, sender) -> str:
    message, _ = create.message_create(contact=contact, template=template, sender=sender, enqueue=False)
    message = send.message_send(message.pk)
    assert message.status == "queued", message.skip_reason
    return fake.request_form(message.provider_sid)["Body"]


def test_the_preview_counts_a_tracked_url_as_its_short_link_as_sent(fake, sender):
    contact = ContactFactory(phone="+254711500001", name="Amina")
    template = MessageTemplate.objects.create(
        name="sale", channel="sms", body=f"Hi {{{{ name }}}}, our spring sale is on: {LONG_URL}. See you!"
    )
    preview = template_preview(template, contact=contact)
    body = sent_body(fake, contact, template, sender)
    assert "https://go.example.org/l/" in body and LONG_URL not in body
    assert preview["segments"] == sms_segments(body).segments == 1
    assert preview["characters"] == len(body)
    assert sms_segments(preview["text"]).segments == 2  # the text as written would take two parts


@pytest.mark.parametrize("tracking", [True, False])
def test_an_opted_out_url_or_tracking_off_counts_the_url_as_written(fake, sender, settings, tracking):
    settings.LINK_TRACKING = tracking
    contact = ContactFactory(phone="+254711500002", name="Amina")
    marker = "notrack:" if tracking else ""
    template = MessageTemplate.objects.create(
        name="sale", channel="sms", body=f"Hi {{{{ name }}}}, our spring sale is on: {marker}{LONG_URL}. See you!"
    )
    preview = template_preview(template, contact=contact)
    body = sent_body(fake, contact, template, sender)
    assert LONG_URL in body and "notrack" not in body
    assert preview["segments"] == sms_segments(body).segments == 2
    assert preview["characters"] == len(body)


@pytest.mark.parametrize("body", [f"Hi {{{{ name }}}}, the sale: {LONG_URL} - see you!", f"The sale: {LONG_URL} " * 2])
def test_the_cost_estimate_counts_the_segments_twilio_is_handed(fake, sender, settings, body):
    contacts = [ContactFactory(phone=f"+25471150010{i}", name=name) for i, name in enumerate(["Amina", "Baraka"])]
    template = MessageTemplate.objects.create(name="sale", channel="sms", body=body)
    campaign = Campaign.objects.create(name="Sale", template=template, sender=sender)
    estimate = services.campaign_dry_run(campaign)["cost"]
    sent = [sent_body(fake, contact, template, sender) for contact in contacts]
    assert estimate["messages"] == 2
    assert estimate["units"] == sum(sms_segments(text).segments for text in sent)
    settings.LINK_TRACKING = False
    assert services.campaign_dry_run(campaign)["cost"]["units"] > estimate["units"]  # the long URLs cost more
