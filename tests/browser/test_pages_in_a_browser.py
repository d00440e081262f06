"""The analyst pages and the admin import, driven in chromium against the live server."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone
from playwright.sync_api import expect

from audience import services as audience
from audience.models import Contact
from campaigns.models import Campaign, CampaignRun, Recipient
from config.roles import ANALYSTS, STAFF
from messaging.models import Direction, Message, MessageStatus
from reporting import selectors
from reporting.counters import counters_recount
from tests.browser.conftest import sign_in, wait_for
from tests.factories import MessageTemplateFactory, SenderFactory, UserFactory
from tests.reporting.support import add_recipient, make_campaign, make_message, make_run

PASSWORD = "browser-test-pass-123"
IMPORT_CSV = (
    "phone,name,timezone,topics,city,age\n"
    "+254711000001,Amina,Africa/Nairobi,news,Nairobi,34\n"
    "+254711000002,Baraka,Africa/Nairobi,news,Mombasa,41\n"
    "not-a-phone,Broken,,,,\n"
    "+254711000003,Chebet,Mars/Base,,Kisumu,29\n"
    "+254711000004,Daudi,,news|promotions,Nakuru,52\n"
)


def _user(username: str, role: str):
    user = UserFactory(username=username, role=role)
    user.set_password(PASSWORD)
    user.save()
    return user


def _kpi(page, name: str) -> str:
    return page.page.locator(f"[data-kpi='{name}'] dd:not(.kpi-note)").inner_text().strip()


def _day_counts() -> dict[str, int]:
    """The dashboard's figures, counted here straight from the messages table."""
    since = timezone.now() - timedelta(hours=24)
    outbound = Message.objects.filter(direction=Direction.OUTBOUND, created_at__gte=since)
    return outbound.aggregate(
        created=Count("id"),
        delivered=Count("id", filter=Q(status__in=selectors.DELIVERED)),
        failed=Count("id", filter=Q(status__in=selectors.FAILED_WITH_CODE)),
    ) | {"inbound": Message.objects.filter(direction=Direction.INBOUND, created_at__gte=since).count()}


def test_an_analyst_signs_in_and_the_dashboard_shows_the_databases_counts(page):
    _user("ana", ANALYSTS)
    now = timezone.now()
    for minutes, status in [(3, "delivered"), (7, "delivered"), (12, "read"), (15, "failed"), (40, "sent")]:
        at = now - timedelta(minutes=minutes)
        make_message(status=status, created_at=at, sent_at=at, error_code="30007" if status == "failed" else "")
    make_message(direction=Direction.INBOUND, status="received", created_at=now, body="Thanks!")
    make_message(status=MessageStatus.DELIVERED, created_at=now - timedelta(days=2))  # outside the 24 h
    counters_recount()

    sign_in(page, "ana", PASSWORD, "/reporting/")
    expected = _day_counts()
    assert expected == {"created": 5, "delivered": 3, "failed": 1, "inbound": 1}
    assert _kpi(page, "outbound") == str(expected["created"])
    assert _kpi(page, "delivered") == str(expected["delivered"])
    assert _kpi(page, "failed") == str(expected["failed"])
    assert _kpi(page, "inbound") == str(expected["inbound"])
    page.page.wait_for_selector("#rate-chart[data-drawn='true'] .main-svg")
    assert page.page.locator("[data-check='database']").get_attribute("class") == "ok"
    assert page.page.locator("nav[aria-label='Main'] a[aria-current='page']").inner_text() == "Dashboard"
    assert page.page.locator("a[href='/admin/']").count() == 0  # analysts get no admin link

    # The page refreshes itself: a message delivered now shows up at the next poll, and the chart is
    # drawn again from the refreshed data (which must survive htmx's swap).
    page.page.evaluate("document.getElementById('rate-chart').dataset.drawn = 'before-refresh'")
    make_message(status=MessageStatus.DELIVERED, created_at=timezone.now())
    expect(page.page.locator("[data-kpi='delivered'] dd:not(.kpi-note)")).to_have_text("4", timeout=25_000)
    page.page.wait_for_selector("#rate-chart[data-drawn='true'] .main-svg")
    assert len(json.loads(page.page.locator("#rate-data").get_attribute("data-chart"))["x"]) == 60
    page.screenshot("dashboard")
    page.goto("/reporting/monitoring/")
    assert page.page.locator("#inbound-rows tr").count() == 1
    make_message(direction=Direction.INBOUND, status="received", created_at=timezone.now(), body="STOP")
    page.page.wait_for_selector("#inbound-rows tr >> text=Opt-out keyword", timeout=15_000)
    assert page.page.locator("#inbound-rows tr").first.inner_text().find("STOP") >= 0
    page.screenshot("monitoring")
    assert page.problems == []


def test_staff_drop_a_csv_on_the_import_page_preview_confirm_and_watch_it_import(page, celery_worker, settings):
    settings.INGEST_INLINE_MAX_BYTES = 0  # every admin import goes to the Celery worker
    _user("boss", STAFF)
    sign_in(page, "boss", PASSWORD, "/reporting/")
    page.goto("/admin/audience/contact/import/")
    sample = page.page.locator("#import-sample")
    assert sample.get_attribute("href") == "/admin/audience/contact/import/sample.csv"

    # A real drop: a File in a DataTransfer, dispatched as dragenter, dragover and drop on the zone.
    page.page.evaluate(
        """([name, text]) => {
            const zone = document.querySelector('.import-dropzone');
            const data = new DataTransfer();
            data.items.add(new File([text], name, {type: 'text/csv'}));
            for (const type of ['dragenter', 'dragover', 'drop']) {
                zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: data}));
            }
        }""",
        ["customers.csv", IMPORT_CSV],
    )
    page.page.wait_for_selector(".import-dropzone.has-file")
    assert "customers.csv" in page.page.locator(".import-dropzone-file").inner_text()
    assert page.page.evaluate("document.getElementById('id_import_file').files[0].name") == "customers.csv"
    # The file has no consent column: the page assumes nothing, staff say what its people agreed to.
    consent = page.page.get_by_role("radio", name="Opted in")
    assert not consent.is_checked() and not page.page.get_by_role("radio", name="Opted out").is_checked()
    consent.check()
    page.screenshot("import-dropped")
    page.page.get_by_role("button", name="Check the file (dry run)").click()

    page.page.wait_for_selector("text=Dry run of customers.csv")
    summary = re.sub(r"\s+", " ", page.page.locator(".import-summary").inner_text())
    assert "3 new" in summary and "2 rows with errors" in summary
    assert page.page.locator("table.import-problems").inner_text().count("error") >= 2
    assert Contact.objects.count() == 0  # the dry run wrote nothing
    page.screenshot("import-preview")
    # 2 rows of 5 have errors: the page asks again before leaving them out.
    assert "2 of the 5 rows checked have errors" in page.page.locator(".import-second-look").inner_text()
    page.page.get_by_label("Import the other rows anyway, leaving the rows with errors out").check()
    page.page.get_by_role("button", name=re.compile("Confirm import")).click()

    page.page.wait_for_url(re.compile(r"/admin/audience/contact/import/\d+/$"))
    expect(page.page.locator("#import-progress")).to_have_count(1, timeout=15_000)
    expect(page.page.locator("#import-status")).to_have_text("Succeeded, 2 rows left out", timeout=60_000)
    assert page.page.locator("#import-progress").evaluate("bar => bar.value") == 100
    assert page.page.locator("[data-count='created_count']").inner_text() == "3"
    page.screenshot("import-done")
    page.page.get_by_role("link", name="See the contacts").click()
    page.page.wait_for_url("**/admin/audience/contact/")
    listing = page.page.locator("#result_list").inner_text()
    for phone in ("+254711000001", "+254711000002", "+254711000004"):
        assert phone in listing
    assert set(Contact.objects.values_list("phone", flat=True)) == {"+254711000001", "+254711000002", "+254711000004"}
    page.screenshot("contacts-imported")


def test_staff_create_and_launch_a_campaign_and_see_it_delivered_on_its_analytics_page(page, celery_worker):
    _user("boss", STAFF)
    phones = [f"+2547120000{n:02d}" for n in range(1, 7)]
    for phone in phones:
        audience.contact_create(phone=phone, name=f"Guest {phone[-2:]}")
    template = MessageTemplateFactory(name="welcome", body="Hello {{ name }}, welcome!")
    sender = SenderFactory(name="simulated-sms", provider="simulated", mps=50)

    sign_in(page, "boss", PASSWORD, "/reporting/")
    page.goto("/admin/campaigns/campaign/add/")
    page.page.locator("#id_name").fill("Browser launch")
    page.page.locator("#id_template").select_option(str(template.pk))
    page.page.locator("#id_sender").select_option(str(sender.pk))
    page.page.locator("input[name='_continue']").click()
    page.page.wait_for_url(re.compile(r"/admin/campaigns/campaign/\d+/change/"))
    campaign = Campaign.objects.get(name="Browser launch")
    page.page.get_by_role("link", name="Launch now…").click()
    page.page.wait_for_selector("text=Estimated duration")
    assert not campaign.runs.exists()  # the confirmation page launched nothing
    page.screenshot("campaign-launch-confirm")
    page.page.get_by_role("button", name="Yes, launch now").click()
    page.page.wait_for_selector("text=the campaign is now")

    def settled() -> bool:
        statuses = Message.objects.filter(
            id__in=Recipient.objects.filter(run__campaign=campaign).values("message_id")
        ).values_list("status", flat=True)
        final = {MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.FAILED, MessageStatus.UNDELIVERED}
        return len(statuses) == len(phones) and set(statuses) <= final

    wait_for(settled, timeout=90)
    page.page.get_by_role("link", name="Analytics", exact=True).first.click()
    page.page.wait_for_url(f"**/reporting/campaigns/{campaign.pk}/")
    summary = selectors.campaign_summary(campaign)
    funnel = {
        step: page.page.locator(f"[data-step='{step}'] strong").inner_text()
        for step in ("targeted", "sent", "delivered")
    }
    assert funnel["targeted"] == str(len(phones)) == str(summary["targeted"])
    assert funnel["sent"] == str(summary["messages"]["sent"])
    assert funnel["delivered"] == str(summary["messages"]["delivered"]) and summary["messages"]["delivered"] >= 1
    page.page.wait_for_selector("#funnel-chart[data-drawn='true'] .main-svg")
    page.page.wait_for_selector("#timeline-chart[data-drawn='true'] .main-svg")
    timeline = json.loads(page.page.locator("#timeline-data").get_attribute("data-chart"))
    assert sum(timeline["delivered"]) == summary["messages"]["delivered"]
    export = page.page.get_by_role("link", name="Export results (CSV)")
    assert export.get_attribute("href") == f"/api/v1/reporting/campaigns/{campaign.pk}/export"
    with page.page.expect_download() as download:
        export.click()
    assert download.value.suggested_filename == f"campaign-{campaign.pk}-results.csv"
    page.screenshot("campaign-analytics")
    assert page.problems == []


def test_a_sending_campaigns_analytics_refresh_in_place_and_stop_when_it_is_over(page):
    _user("ana", ANALYSTS)
    now = timezone.now()
    campaign = make_campaign(name="Live sale")
    run = make_run(campaign, at=now - timedelta(minutes=5), status="running", total=3, sent=1)
    add_recipient(run, message_status="delivered", sent=now - timedelta(minutes=4), delivered_after=2)
    counters_recount()
    sign_in(page, "ana", PASSWORD, f"/reporting/campaigns/{campaign.pk}/")
    delivered = page.page.locator("[data-step='delivered'] strong")
    assert delivered.inner_text() == "1"
    page.page.wait_for_selector("#funnel-chart[data-drawn='true'] .main-svg")
    page.page.evaluate("window.notReloaded = true")

    # Two more delivered while the page is open: the figures and the charts follow, without a reload.
    for _ in range(2):
        add_recipient(run, message_status="delivered", sent=timezone.now(), delivered_after=1)
    counters_recount()
    expect(delivered).to_have_text("3", timeout=25_000)
    page.page.wait_for_function("JSON.parse(document.getElementById('funnel-data').dataset.chart).values[2] === 3")
    page.page.wait_for_selector("#funnel-chart[data-drawn='true'] .main-svg")
    assert page.page.evaluate("window.notReloaded") is True

    # Over, and its receipts long in: the next refresh brings a page that no longer polls.
    CampaignRun.objects.filter(pk=run.pk).update(status="completed", finished_at=timezone.now() - timedelta(hours=2))
    expect(page.page.locator("[data-live]")).to_have_count(0, timeout=25_000)
    assert page.page.locator("#analytics-body").get_attribute("hx-trigger") is None
    page.screenshot("campaign-analytics-live")
    assert page.problems == []


def test_an_analyst_cannot_reach_the_admins_change_pages(page):
    _user("ana", ANALYSTS)
    campaign = Campaign.objects.create(
        name="Read only", template=MessageTemplateFactory(), sender=SenderFactory(provider="simulated")
    )
    sign_in(page, "ana", PASSWORD, "/reporting/campaigns/")
    page.page.get_by_role("link", name="Read only").click()
    page.page.wait_for_url(f"**/reporting/campaigns/{campaign.pk}/")
    assert page.page.get_by_role("link", name="Open in the admin").count() == 0

    response = page.goto("/admin/campaigns/campaign/add/")
    assert response.status == 403
    response = page.goto(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    # Only the read-only view: no field to edit, no save, no launch.
    assert response.status == 200 and "View campaign" in page.page.content()
    assert page.page.locator("input[name='_save'], input[name='_continue'], #id_name").count() == 0
    assert page.page.get_by_role("button", name="Launch now").count() == 0
    assert page.page.get_by_role("link", name="Launch now…").count() == 0
    assert page.goto("/admin/audience/contact/import/").status == 403
    posted = page.page.request.post(
        page.base_url + f"/admin/campaigns/campaign/{campaign.pk}/act/launch/",
        headers={"X-CSRFToken": _csrf(page), "Referer": page.base_url + "/admin/"},
    )
    assert posted.status in (200, 302, 403)
    campaign.refresh_from_db()
    assert campaign.status == "draft" and not campaign.runs.exists()
    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    page.screenshot("analyst-admin-read-only")


def _csrf(page) -> str:
    cookies = {cookie["name"]: cookie["value"] for cookie in page.page.context.cookies()}
    return cookies.get("csrftoken", "")
