"""The back office's journeys in chromium: local numbers, launch guards, cancel and duplicate, send test,
a short SMS campaign's analytics."""

from __future__ import annotations

import re
from datetime import timedelta

from django.utils import timezone
from playwright.sync_api import expect

from audience import services as audience
from audience.models import Contact
from campaigns.models import Campaign, CampaignAction, CampaignRun
from config.roles import ANALYSTS, STAFF
from reporting.counters import counters_recount
from tests.browser.conftest import sign_in
from tests.factories import MessageTemplateFactory, SenderFactory, UserFactory
from tests.reporting.support import add_recipient, make_campaign, make_run

PASSWORD = "browser-test-pass-123"
KENYAN_CSV = "phone,name\n0722 123400,Amina\n254-712352300,Baraka\n0733 100200,Chebet\n"


def _user(username: str, role: str):
    user = UserFactory(username=username, role=role)
    user.set_password(PASSWORD)
    user.save()
    return user


def test_staff_import_local_numbers_with_a_default_country(page, media_dir, celery_worker, tmp_path):
    _user("boss", STAFF)
    sign_in(page, "boss", PASSWORD, "/reporting/")
    page.goto("/admin/audience/contact/import/")
    upload = tmp_path / "kenya.csv"
    upload.write_text(KENYAN_CSV)
    page.page.locator("#id_import_file").set_input_files(str(upload))
    page.page.get_by_role("radio", name="Opted in").check()
    page.page.locator("#id_default_country").select_option("KE")
    page.page.get_by_role("button", name="Check the file (dry run)").click()
    page.page.wait_for_selector("text=Dry run of kenya.csv")
    summary = re.sub(r"\s+", " ", page.page.locator(".import-summary").inner_text())
    assert "3 new" in summary and "0 rows with errors" in summary
    page.page.get_by_role("button", name=re.compile("Confirm import")).click()
    expect(page.page.locator("#import-status")).to_have_text("Succeeded", timeout=60_000)
    assert set(Contact.objects.values_list("phone", flat=True)) == {"+254722123400", "+254712352300", "+254733100200"}
    page.screenshot("journey-local-numbers")


def test_a_launch_to_nobody_is_stated_then_refused_and_a_cancelled_campaign_is_duplicated(page):
    _user("boss", STAFF)
    audience.contact_create(phone="+254712000001", name="A")
    template = MessageTemplateFactory(body="Your code: {{ attributes.offer_code }}")
    campaign = Campaign.objects.create(name="Codes", template=template, sender=SenderFactory())
    sign_in(page, "boss", PASSWORD, "/reporting/")
    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    page.page.get_by_role("link", name="Launch now…").click()
    page.page.wait_for_selector("text=Estimated duration")
    assert "Excluded: missing variable" in page.page.content()
    page.screenshot("journey-launch-confirm-nobody")
    page.page.get_by_role("button", name="Yes, launch now").click()
    page.page.wait_for_selector("text=Could not launch: nobody would receive this campaign now")
    assert not CampaignRun.objects.exists()

    page.page.get_by_role("link", name="Cancel campaign…").click()
    page.page.wait_for_selector("text=none yet: nothing has been sent")
    page.page.get_by_role("button", name="Yes, cancel the campaign").click()
    page.page.wait_for_selector("text=the campaign is now Cancelled")
    assert page.page.locator("#id_name").count() == 0  # read-only now
    page.page.get_by_role("button", name="Duplicate").click()
    page.page.wait_for_selector("text=Duplicated as 'Codes (copy)'")
    copy = Campaign.objects.get(name="Codes (copy)")
    assert copy.status == "draft" and page.page.url.endswith(f"/campaign/{copy.pk}/change/")
    page.screenshot("journey-duplicated")


def test_staff_send_a_test_to_their_own_number(page):
    _user("boss", STAFF)
    contact = audience.contact_create(phone="+254712000001", name="Amina")
    campaign = Campaign.objects.create(
        name="Welcome", template=MessageTemplateFactory(body="Hello {{ name }}"), sender=SenderFactory()
    )
    sign_in(page, "boss", PASSWORD, "/reporting/")
    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    page.page.get_by_role("link", name="Send test").click()
    page.page.get_by_label("As if to contact").fill(contact.phone)
    page.page.get_by_label("Send to").fill("+254 799 000 111")
    page.page.get_by_role("button", name="Send the test").click()
    page.page.wait_for_selector("text=Test sent to +254799000111: Hello Amina")
    assert CampaignAction.objects.filter(campaign=campaign, action="test_send").count() == 1
    assert not campaign.runs.exists()


def test_an_analyst_reads_a_short_sms_campaign_per_minute_without_read_figures(page):
    _user("ana", ANALYSTS)
    campaign = make_campaign(name="Flash SMS")
    start = timezone.now() - timedelta(minutes=10)
    run = make_run(campaign, at=start, total=3, sent=3)
    CampaignRun.objects.filter(pk=run.pk).update(finished_at=start + timedelta(seconds=30))
    for _ in range(3):
        add_recipient(run, message_status="delivered", sent=start + timedelta(seconds=5), delivered_after=3)
    counters_recount([run.pk])
    sign_in(page, "ana", PASSWORD, f"/reporting/campaigns/{campaign.pk}/")
    page.page.wait_for_selector("#timeline-chart[data-drawn='true'] .main-svg")
    text = page.page.locator("main").inner_text()
    assert "Timeline, per minute" in text and "Read rate" not in text
    assert page.page.locator("#timeline-chart .g-ytitle").text_content() == "Messages per minute"
    page.screenshot("journey-short-sms-analytics")


def test_saving_a_template_with_a_variable_most_of_the_audience_lacks_warns_per_campaign(page):
    _user("boss", STAFF)
    for index in range(3):
        audience.contact_create(phone=f"+25471200000{index}", name=f"C{index}")
    template = MessageTemplateFactory(body="Hello {{ name }}")
    Campaign.objects.create(name="Offers", template=template, sender=SenderFactory())
    sign_in(page, "boss", PASSWORD, "/reporting/")
    page.goto(f"/admin/messaging/messagetemplate/{template.pk}/change/")
    page.page.locator("#id_body").fill("Your code: {{ attributes.offer_code }}")
    page.page.get_by_role("button", name="Save and continue editing").click()
    warning = page.page.locator(".messagelist .warning")
    expect(warning).to_contain_text("Campaign “Offers”: 3 of the 3 contacts in this campaign's audience lack a value")
    page.screenshot("journey-template-missing-variable")
