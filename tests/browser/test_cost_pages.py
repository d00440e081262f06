"""Cost in chromium: staff read the estimate in the dry run and the launch confirmation; an analyst reads
the cost charged against the estimate on the campaign's analytics page."""

from __future__ import annotations

from decimal import Decimal

from django.utils import timezone

from audience import services as audience
from campaigns import services as campaigns
from campaigns.models import Campaign, CampaignRun
from config.roles import ANALYSTS, STAFF
from messaging.models import Message, PriceTable
from reporting.counters import counters_recount
from tests.browser.conftest import sign_in
from tests.factories import MessageTemplateFactory, SenderFactory, UserFactory

PASSWORD = "browser-test-pass-123"


def _user(username: str, role: str):
    user = UserFactory(username=username, role=role)
    user.set_password(PASSWORD)
    user.save()
    return user


def _campaign() -> Campaign:
    PriceTable.objects.create(
        country="KE", channel="sms", price=Decimal("0.1290"), currency="USD", refreshed_at=timezone.now()
    )
    audience.contact_create(phone="+254712000001", name="Amina")
    audience.contact_create(phone="+254712000002", name="Zoë")  # UCS-2: 67 a part
    audience.contact_create(phone="+12125550123", name="Ann")  # no US price
    template = MessageTemplateFactory(
        body="Hi {{ name }}! Our shop opens on Saturday at 9: come early for coffee. See you there."
    )
    return Campaign.objects.create(name="Shop", template=template, sender=SenderFactory())


def test_staff_read_the_estimate_in_the_dry_run_and_the_confirmation(page):
    _user("boss", STAFF)
    campaign = _campaign()
    sign_in(page, "boss", PASSWORD, "/reporting/")
    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/dry-run/")
    cell = page.page.locator("td.cost-estimate").inner_text()
    assert cell.startswith("0.3870 USD for 2 messages (3 segments)") and "1 recipients have no price (US" in cell
    page.screenshot("cost-dry-run")
    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/act/launch/")
    page.page.wait_for_selector("text=Estimated cost")
    assert "0.3870 USD for 2 messages (3 segments)" in page.page.content()
    page.screenshot("cost-launch-confirm")


def test_an_analyst_reads_the_cost_charged_against_the_estimate(page):
    _user("ana", ANALYSTS)
    campaign = _campaign()
    run = campaigns.campaign_launch(campaign)
    from campaigns.services import cost

    cost.run_cost_estimate(run.pk)
    from campaigns.models import Recipient

    kenyan = Recipient.objects.filter(run=run, state="pending", contact__phone__startswith="+254")
    for recipient in kenyan.select_related("contact"):
        message = Message.objects.create(
            contact=recipient.contact,
            channel="sms",
            status="delivered",
            to_address=recipient.contact.phone,
            body="x",
            price=Decimal("0.1290"),
            price_unit="USD",
            delivered_at=timezone.now(),
            sent_at=timezone.now(),
        )
        Recipient.objects.filter(pk=recipient.pk).update(message=message, state="sent")
    CampaignRun.objects.filter(pk=run.pk).update(finished_at=timezone.now(), status="completed")
    counters_recount([run.pk])
    sign_in(page, "ana", PASSWORD, f"/reporting/campaigns/{campaign.pk}/")
    kpi = page.page.locator("[data-testid='cost']").inner_text()
    assert "0.2580 / 0.3870 USD" in kpi
    assert "2 messages priced so far" in page.page.locator("[data-testid='cost-note']").inner_text()
    page.screenshot("cost-analytics")
