"""axe-core over the pages staff and analysts use: no critical or serious violation."""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe

from audience import services as audience
from campaigns.models import Campaign
from config.roles import STAFF
from tests.browser.conftest import sign_in
from tests.factories import CampaignFactory, MessageTemplateFactory, SenderFactory, UserFactory

PASSWORD = "browser-test-pass-123"
BLOCKING = {"critical", "serious"}


@pytest.fixture
def staff(roles):
    user = UserFactory(username="boss", role=STAFF)
    user.set_password(PASSWORD)
    user.save()
    return user


def _violations(page) -> list[str]:
    results = Axe().run(page.page)
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at "
        + "; ".join(node["target"][0] for node in violation["nodes"][:3])
        for violation in results.response["violations"]
        if violation["impact"] in BLOCKING
    ]


def test_the_back_office_and_the_reports_pass_axe(page, staff):
    audience.contact_create(phone="+254712000001", name="A")
    campaign = CampaignFactory(name="Promo")
    sign_in(page, "boss", PASSWORD, "/reporting/")
    found = {}
    for path in (
        "/reporting/",
        "/reporting/monitoring/",
        f"/reporting/campaigns/{campaign.pk}/",
        "/admin/",
        "/admin/audience/contact/",
        "/admin/audience/contact/import/",
        f"/admin/campaigns/campaign/{campaign.pk}/change/",
        "/admin/campaigns/campaign/add/",
        "/admin/campaigns/segment/add/",
    ):
        page.goto(path)
        if problems := _violations(page):
            found[path] = problems
    assert found == {}, "\n".join(f"{path}: {problem}" for path, problems in found.items() for problem in problems)


def test_the_campaign_page_and_list_fit_a_1440_px_window_and_start_with_where_it_is(page, staff):
    from campaigns import services

    for n in range(30):
        audience.contact_create(phone=f"+2547120000{n:02d}", name=f"Guest {n}")
    sender = SenderFactory(mps=1)
    campaign = Campaign.objects.create(
        name="A campaign with a long name", template=MessageTemplateFactory(), sender=sender
    )
    services.campaign_launch(campaign)
    services.campaign_pause(campaign)
    page.page.set_viewport_size({"width": 1440, "height": 900})
    sign_in(page, "boss", PASSWORD, "/reporting/")
    for path in (f"/admin/campaigns/campaign/{campaign.pk}/change/", "/admin/campaigns/campaign/"):
        page.goto(path)
        width = page.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1440, f"{path} is {width} px wide"
    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    headings = page.page.locator("fieldset h2").all_inner_texts()
    assert headings[0] == "Now" and not any("Trigger" in heading for heading in headings)
    page.screenshot("campaign-page-1440")
