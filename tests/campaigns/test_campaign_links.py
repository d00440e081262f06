"""A campaign's messages, sent by the dispatcher's batch path, carry per-recipient short links with its UTM."""

import pytest

from campaigns import services
from campaigns.models import Recipient
from messaging.links.codes import code_parse
from messaging.models import Link, MessageTemplate
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
