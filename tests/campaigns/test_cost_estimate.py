"""The cost estimate before launch: each recipient's rendered segments (GSM-7 or UCS-2) times the price
for its country and channel, in the dry run (service, page, API) and the launch confirmation; kept on
the run at launch for the summary."""

from decimal import Decimal

import pytest
from django.utils import timezone

from audience import services as audience
from campaigns import services
from campaigns.models import Campaign, Recipient
from campaigns.services import cost
from messaging.models import PriceTable
from messaging.rendering import sms_segments
from tests.factories import MessageTemplateFactory, SenderFactory, UserFactory, VariantFactory

pytestmark = pytest.mark.django_db

FILLER = "a" * 140  # "Hi " + name + "! " + FILLER: 150 GSM-7 characters with a five-letter name


def _price(country: str, price: str, currency: str = "USD", channel: str = "sms") -> None:
    PriceTable.objects.create(
        country=country, channel=channel, price=Decimal(price), currency=currency, refreshed_at=timezone.now()
    )


@pytest.fixture
def campaign() -> Campaign:
    _price("KE", "0.1290")
    _price("GB", "0.0524")
    audience.contact_create(phone="+254712000001", name="Amina")  # 150 septets: one segment
    audience.contact_create(phone="+254712000002", name="Bartholomew Alexander")  # 166 septets: two
    audience.contact_create(phone="+447400123456", name="Zoë")  # ë is not GSM-7: 148 UCS-2 units, three
    audience.contact_create(phone="+12125550123", name="Ann")  # the US has no price in the table
    template = MessageTemplateFactory(body="Hi {{ name }}! " + FILLER)
    return Campaign.objects.create(name="Promo", template=template, sender=SenderFactory())


def test_the_dry_run_prices_each_recipients_rendered_segments_by_country(campaign):
    estimate = services.campaign_dry_run(campaign)["cost"]
    assert estimate["unit"] == "segment" and estimate["messages"] == 4
    by_country = {row["country"]: (row["messages"], row["units"], row["amount"]) for row in estimate["by_country"]}
    assert by_country == {"KE": (2, 3, "0.38700"), "GB": (1, 3, "0.15720")}
    assert estimate["totals"] == [{"currency": "USD", "amount": "0.54420", "messages": 3, "units": 6}]
    assert estimate["unpriced"] == {"messages": 1, "countries": ["US"]}
    words = cost.cost_words(estimate)
    assert words == (
        "0.5442 USD for 3 messages (6 segments); 1 recipients have no price (US: add them to the price table)"
    )


def test_different_currencies_are_kept_apart_never_added(campaign):
    PriceTable.objects.filter(country="GB").update(currency="GBP", price=Decimal("0.0400"))
    estimate = services.campaign_dry_run(campaign)["cost"]
    assert [(t["currency"], t["amount"]) for t in estimate["totals"]] == [("GBP", "0.12000"), ("USD", "0.38700")]
    assert "0.1200 GBP for 1 messages (3 segments) + 0.3870 USD for 2 messages (3 segments)" in cost.cost_words(
        estimate
    )
    assert "not added up" in cost.cost_words(estimate)


def test_a_body_without_placeholders_is_counted_once_for_everyone(campaign):
    campaign.template.body = "€" * 81  # 162 septets (the euro sign is an escape pair): two segments each
    campaign.template.save()
    estimate = services.campaign_dry_run(campaign)["cost"]
    assert estimate["units"] == 8
    assert Decimal(estimate["totals"][0]["amount"]) == Decimal("0.1290") * 4 + Decimal("0.0524") * 2


def test_attributes_count_in_the_rendered_length(campaign):
    from audience.models import Contact

    Contact.objects.filter(phone="+254712000001").update(attributes={"city": "x" * 20})
    campaign.template.body = "Hi {{ name }}! " + "a" * 130 + " {{ attributes.city }}"
    campaign.template.fallbacks = {"attributes.city": "-"}
    campaign.template.save()
    by_country = {row["country"]: row["units"] for row in services.campaign_dry_run(campaign)["cost"]["by_country"]}
    assert by_country["KE"] == 2 + 1  # Amina: 141 + 20 characters, two segments; Bartholomew: 158, one


def test_past_the_render_limit_a_spread_sample_gives_the_segments_and_messages_stay_exact(campaign, settings):
    for n in range(40):
        audience.contact_create(phone=f"+2547130001{n:02d}", name="Wanjiru")
    settings.COST_ESTIMATE_RENDER_MAX = 4  # 44 recipients: about one in eleven is rendered
    estimate = services.campaign_dry_run(campaign)["cost"]
    messages = {row["country"]: row["messages"] for row in estimate["by_country"]}
    assert messages == {"KE": 42, "GB": 1} and estimate["unpriced"]["messages"] == 1
    assert estimate["rendered"] < estimate["messages"] == 44
    assert f"(segments from a sample of {estimate['rendered']} rendered messages)" in cost.cost_words(estimate)
    # A country no sampled contact belongs to takes the sample's average: no country is left at zero.
    assert all(row["units"] >= row["messages"] for row in estimate["by_country"])


def test_whatsapp_is_priced_per_message_whatever_its_length(campaign):
    _price("KE", "0.0297", channel="whatsapp")
    campaign.sender = SenderFactory(channel="whatsapp", kind="whatsapp", from_address="whatsapp:+15005550006")
    campaign.template = MessageTemplateFactory(
        channel="whatsapp", body="Hi {{ name }}! " + FILLER * 3, content_sid="HX" + "a" * 32, content_variables={}
    )
    campaign.save()
    estimate = services.campaign_dry_run(campaign)["cost"]
    assert (estimate["unit"], estimate["units"], estimate["messages"]) == ("message", 4, 4)
    assert estimate["totals"] == [{"currency": "USD", "amount": "0.05940", "messages": 2, "units": 2}]
    assert estimate["unpriced"] == {"messages": 2, "countries": ["GB", "US"]}


def test_skipped_contacts_are_not_priced(campaign):
    from audience.models import Contact

    Contact.objects.filter(phone="+447400123456").update(consent_status="opted_out")
    estimate = services.campaign_dry_run(campaign)["cost"]
    assert {row["country"] for row in estimate["by_country"]} == {"KE"}
    assert estimate["messages"] == 3


def test_a_launched_run_keeps_the_estimate_the_dry_run_gave(campaign):
    dry = services.campaign_dry_run(campaign)["cost"]
    run = services.campaign_launch(campaign)
    assert cost.run_cost_estimate(run.pk) == dry
    run.refresh_from_db()
    assert run.cost_estimate == dry
    assert cost.run_cost_estimate(run.pk) == dry  # twice: the same


def test_the_dry_run_page_and_the_launch_confirmation_state_the_estimate(client, campaign):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    page = client.get(f"/admin/campaigns/campaign/{campaign.pk}/dry-run/").content.decode()
    assert "Estimated cost" in page and "0.5442 USD for 3 messages (6 segments)" in page
    assert "1 recipients have no price (US" in page
    assert "<td>KE</td><td>2</td><td>3</td><td>0.12900 USD</td><td>0.38700 USD</td>" in page
    confirm = client.get(f"/admin/campaigns/campaign/{campaign.pk}/act/launch/").content.decode()
    assert "Estimated cost" in confirm and "0.5442 USD for 3 messages (6 segments)" in confirm


def test_the_dry_run_api_returns_the_estimate(staff_api, campaign):
    response = staff_api.post(f"/api/v1/campaigns/{campaign.pk}/dry-run/")
    assert response.status_code == 200, response.content
    body = response.json()["cost"]
    assert body["totals"] == [{"currency": "USD", "amount": "0.54420", "messages": 3, "units": 6}]
    assert body["unpriced"]["countries"] == ["US"]


def test_an_experiment_prices_each_arm_with_its_own_variants_template():
    """Each recipient is counted with the template its arm sends; the control group is not priced."""
    _price("KE", "0.1000")
    for n in range(60):
        audience.contact_create(phone=f"+2547120010{n:02d}", name="Amina")
    short = MessageTemplateFactory(body="Hi {{ name }}")  # one segment
    long = MessageTemplateFactory(body="Hi {{ name }}! " + FILLER + FILLER)  # 290 septets: two segments
    campaign = Campaign.objects.create(name="Test", template=short, sender=SenderFactory(), control_share=10)
    first = VariantFactory(campaign=campaign, label="A", template=short, weight=1)
    second = VariantFactory(campaign=campaign, label="B", template=long, weight=1)
    estimate = services.campaign_dry_run(campaign)["cost"]

    run = services.campaign_launch(campaign)
    arms = list(Recipient.objects.filter(run=run).values_list("arm", flat=True))
    segments = {first.pk: 1, second.pk: sms_segments("Hi Amina! " + FILLER + FILLER).segments}
    assert segments[second.pk] == 2
    sent = [arm for arm in arms if arm in segments]
    assert 0 < sent.count(first.pk) < len(sent) and len(sent) < 60  # both arms and a control group drawn
    assert estimate["messages"] == len(sent)
    assert estimate["units"] == sum(segments[arm] for arm in sent)
    [total] = estimate["totals"]
    assert (total["currency"], total["messages"], total["units"]) == ("USD", len(sent), estimate["units"])
    assert Decimal(total["amount"]) == sum(Decimal("0.1000") * segments[arm] for arm in sent)
    assert cost.run_cost_estimate(run.pk) == estimate
