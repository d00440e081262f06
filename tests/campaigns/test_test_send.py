"""Send test: what a contact would get, to a number staff give, through the campaign's sender, counted nowhere."""

import pytest

from audience import services as audience
from campaigns.models import Campaign, CampaignAction
from messaging.models import Message, ProviderCallback
from tests import delivery
from tests.factories import MessageTemplateFactory, SenderFactory, UserFactory

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(fake):
    contact = audience.contact_create(phone="+254712000001", name="Amina", attributes={"code": "X1"})
    template = MessageTemplateFactory(body="Hello {{ name }}, your code {{ attributes.code }}")
    campaign = Campaign.objects.create(name="Promo", template=template, sender=SenderFactory(provider="twilio"))
    campaign.contact = contact
    return campaign


def test_a_test_goes_to_the_given_number_with_the_contacts_text_and_is_counted_nowhere(staff_api, campaign, fake):
    response = staff_api.post(
        f"/api/v1/campaigns/{campaign.pk}/test-send", {"contact": "0712 000001", "to": "+254 799 000 111"}
    )
    assert response.status_code == 400 and "contact" in response.json()  # no default country: not a contact phone
    response = staff_api.post(
        f"/api/v1/campaigns/{campaign.pk}/test-send", {"contact": str(campaign.contact.pk), "to": "+254 799 000 111"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["to"] == "+254799000111" and body["text"] == "Hello Amina, your code X1"
    assert fake.requests_to("+254799000111") == 1 and fake.requests_to("+254712000001") == 0
    assert not Message.objects.exists() and not ProviderCallback.objects.exists()
    action = CampaignAction.objects.get(campaign=campaign, action="test_send")
    assert action.detail == {"contact": campaign.contact.pk, "to": "+2547******11", "sid": body["provider_sid"]}
    campaign.refresh_from_db()
    assert campaign.status == "draft"


def test_a_contact_missing_a_variable_and_a_bad_number_are_named(staff_api, campaign):
    bare = audience.contact_create(phone="+254712000002", name="Bo")
    missing = staff_api.post(
        f"/api/v1/campaigns/{campaign.pk}/test-send", {"contact": bare.phone, "to": "+254799000111"}
    )
    assert missing.status_code == 400 and "no value for attributes.code" in str(missing.json()["contact"])
    bad = staff_api.post(f"/api/v1/campaigns/{campaign.pk}/test-send", {"contact": bare.phone, "to": "12"})
    assert bad.status_code == 400 and "to" in bad.json()


def test_analysts_cannot_send_tests(analyst_api, campaign):
    response = analyst_api.post(
        f"/api/v1/campaigns/{campaign.pk}/test-send", {"contact": campaign.contact.phone, "to": "+254799000111"}
    )
    assert response.status_code == 403


def test_staff_send_a_test_from_the_admin(client, campaign, fake):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    page = client.get(f"/admin/campaigns/campaign/{campaign.pk}/test-send/").content.decode()
    assert 'name="to"' in page and 'name="contact"' in page
    response = client.post(
        f"/admin/campaigns/campaign/{campaign.pk}/test-send/",
        {"contact": campaign.contact.phone, "to": "+254799000111"},
        follow=True,
    )
    assert "Test sent to +254799000111" in response.content.decode()
    assert fake.requests_to("+254799000111") == 1 and not Message.objects.exists()
