"""A campaign's messages, sent by the dispatcher's batch path, carry per-recipient short links with its UTM."""

import pytest

from campaigns import services
from campaigns.models import Recipient
from messaging.links.codes import code_parse
from messaging.models import Link, MessageTemplate
from messaging.rendering import sms_segments
from tests import delivery
from tests.delivery import PHONES, campaign_with_audience

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db


def test_each_recipient_gets_its_own_code_and_the_campaigns_parameters(fake, settings):
    settings.PUBLIC_BASE_URL = "https://go.example.org"
    campaign = campaign_with_audience(phones=PHONES[:3], link_params={"utm_source": "sms", "utm_campaign": "spring"})
    MessageTemplate.objects.filter(pk=campaign.template_id).update(
        body="Hi {{ name }}: https://shop.example.com/spring?utm_source=partner"
    )
    run = services.campaign_launch(campaign)
    delivery.drain(run)
    codes = set()
    for recipient in Recipient.objects.filter(run=run).select_related("message"):
        message = recipient.message
        assert message.status == "queued", message.skip_reason
        sent = fake.request_form(message.provider_sid)["Body"]
        code = sent.rsplit("/l/", 1)[1]
        assert sent.startswith("Hi C") and code_parse(code) == (message.pk, 0)
        codes.add(code)
        link = Link.objects.get(message=message)
        # The link's own utm_source is kept; utm_campaign is added.
        assert link.url == "https://shop.example.com/spring?utm_source=partner&utm_campaign=spring"
    assert len(codes) == 3


def test_the_dry_run_counts_the_sms_parts_the_dispatcher_hands_to_twilio(fake, settings):
    settings.PUBLIC_BASE_URL = "https://go.example.org"
    campaign = campaign_with_audience(phones=PHONES[:4])
    long_url = (
        "https://shop.example.com/collections/spring-sale-2026/womens-running-shoes"
        "?colour=green&size=42&ref=sms&utm_content=footer-banner-variant-b&utm_term=running"
    )
    MessageTemplate.objects.filter(pk=campaign.template_id).update(
        body=f"Hi {{{{ name }}}}, the spring sale: {long_url}"
    )
    campaign.template.refresh_from_db()
    dry_run = services.campaign_dry_run(campaign)
    run = services.campaign_launch(campaign)
    delivery.drain(run)
    sent = {
        r.contact_id: fake.request_form(r.message.provider_sid)["Body"]
        for r in Recipient.objects.filter(run=run).select_related("message")
    }
    assert len(sent) == 4 and all("/l/" in body for body in sent.values())
    assert dry_run["cost"]["units"] == sum(sms_segments(body).segments for body in sent.values()) == 4
    for sample in dry_run["samples"]:
        assert sample["segments"] == sms_segments(sent[sample["contact"]]).segments
        assert sample["characters"] == len(sent[sample["contact"]])
    assert sms_segments(dry_run["samples"][0]["text"]).segments == 2  # as written, with the long URL
