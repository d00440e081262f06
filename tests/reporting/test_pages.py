"""The analyst pages (dashboard, live monitoring, campaign analytics) with the Django test client.

Every figure on a page is checked against rows the test wrote; anonymous visitors are sent to the
sign-in page, users without a role get 403, and Analysts never reach the admin's edit pages.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from audience.ingest import preview as ingest_preview
from audience.ingest import services as ingest_services
from audience.models import ImportSource
from campaigns.models import CampaignRun
from config.roles import STAFF
from messaging.models import Direction, MessageStatus, Sender
from reporting.counters import counters_recount, counters_sweep
from tests.factories import ContactFactory, UserFactory
from tests.reporting.support import add_recipient, make_campaign, make_message, make_run, opt_out_event

pytestmark = pytest.mark.django_db

PAGES = ["/reporting/", "/reporting/monitoring/", "/reporting/campaigns/"]


def _text(response) -> str:
    """The page's text with tags dropped and white space squeezed, for assertions on what a reader sees."""
    html = response.content.decode()
    html = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
def analyst_client(client, analyst_user):
    client.force_login(analyst_user)
    return client


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def traffic():
    """Last 24 h: 5 outbound (3 delivered, 1 read, 1 failed 30007), 2 inbound (a STOP and a reply), 1 opt-out."""
    now = timezone.now()
    campaign = make_campaign(name="Flash sale")
    run = make_run(
        campaign,
        at=now - timedelta(minutes=30),
        status="running",
        total=6,
        sent=5,
        skipped=1,
        skipped_by_reason={"opted_out": 1},
    )
    add_recipient(run, state="skipped", reason="opted_out", message_status=None)
    recent = now - timedelta(minutes=20)
    for _ in range(3):
        add_recipient(run, message_status="delivered", sent=recent, delivered_after=5)
    read = add_recipient(run, message_status="read", sent=recent, delivered_after=5, read_after=30)
    add_recipient(run, state="failed", message_status="failed", sent=recent, failed_after=2, error_code="30007")
    make_message(
        contact=read.contact,
        direction=Direction.INBOUND,
        status="received",
        created_at=now - timedelta(minutes=5),
        body="STOP",
    )
    make_message(
        direction=Direction.INBOUND, status="received", created_at=now - timedelta(minutes=4), body="What time?"
    )
    opt_out_event(read.contact, now - timedelta(minutes=5))
    # Older than a day: counted nowhere on the dashboard.
    make_message(status=MessageStatus.DELIVERED, created_at=now - timedelta(days=3))
    counters_recount()
    return campaign, run


# --- Access ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [*PAGES, "/reporting/campaigns/1/", "/reporting/monitoring/inbound/"])
def test_anonymous_visitors_are_sent_to_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_a_user_without_a_role_is_refused(client):
    client.force_login(UserFactory(username="nobody"))
    assert client.get("/reporting/").status_code == 403


def test_an_analyst_signs_in_on_the_pages_own_login_and_lands_on_the_dashboard(client, analyst_user):
    analyst_user.set_password("analyst-pass-123")
    analyst_user.save()
    page = client.get("/accounts/login/?next=/reporting/monitoring/")
    assert page.status_code == 200 and 'name="username"' in page.content.decode()
    response = client.post(
        "/accounts/login/", {"username": "analyst", "password": "analyst-pass-123", "next": "/reporting/monitoring/"}
    )
    assert response.status_code == 302 and response["Location"] == "/reporting/monitoring/"
    assert client.get("/reporting/").status_code == 200


@pytest.mark.parametrize("user_fixture", ["analyst_user", "staff_user"])
@pytest.mark.parametrize("url", PAGES)
def test_every_page_renders_for_analysts_and_staff(client, request, user_fixture, url, traffic):
    client.force_login(request.getfixturevalue(user_fixture))
    response = client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert '<main id="main"' in page and 'aria-label="Main"' in page
    # Strict-CSP ready: no inline code, handlers or style attributes.
    assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", page)
    assert not re.search(r"\son[a-z]+=", page) and " style=" not in page
    assert '"includeIndicatorStyles": false' in page and "django_htmx/htmx-2.min.js" in page
    assert ('href="/admin/"' in page) == (user_fixture == "staff_user")


def test_analysts_cannot_reach_the_admins_edit_pages(analyst_client, traffic):
    campaign, _run = traffic
    assert analyst_client.get("/admin/campaigns/campaign/add/").status_code == 403
    assert analyst_client.get("/admin/audience/contact/import/").status_code == 403
    change = analyst_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    page = change.content.decode()
    # The change URL only shows the campaign read-only: no form fields, no save, no launch.
    assert change.status_code == 200 and "View campaign" in page
    assert 'name="_save"' not in page and 'name="name"' not in page and "Launch now" not in page
    posted = analyst_client.post(f"/admin/campaigns/campaign/{campaign.pk}/change/", {"name": "Renamed"})
    assert posted.status_code == 403
    campaign.refresh_from_db()
    assert campaign.name == "Flash sale"


# --- Dashboard ---------------------------------------------------------------------------------


def test_the_dashboard_shows_the_last_days_counts_from_the_database(analyst_client, traffic):
    response = analyst_client.get("/reporting/")
    text = _text(response)
    assert "Messages created 5 " in text and "Sent 4 " in text and "Delivered 4 " in text
    assert "Read 1 " in text and "Failed or undelivered 1 " in text and "Inbound 2 " in text
    assert "Opt-outs 1 " in text and "100.0 % of sent" in text
    page = response.content.decode()
    assert 'hx-get="/reporting/" hx-trigger="every 10s"' in page
    assert re.search(r'id="rate-data"[^>]* data-chart="\{&quot;x&quot;:', page) and "plotly/plotly.min.js" in page
    # Active run with its progress bar: 5 sent + 1 skipped of 6.
    assert "Flash sale" in text and '<progress max="1" value="1.0000"' in page
    for name in ("Database", "Redis", "Workers", "Beat"):
        assert f"<strong>{name}</strong>" in page


def test_the_dashboard_partial_is_what_htmx_polls(analyst_client, traffic):
    response = analyst_client.get("/reporting/", headers={"HX-Request": "true"})
    page = response.content.decode()
    assert response.status_code == 200 and "<html" not in page and "<main" not in page
    assert "Delivered" in page and 'id="rate-data"' in page


def test_the_send_rate_series_counts_each_minute(analyst_client, traffic):
    response = analyst_client.get("/reporting/")
    rates = response.context["rates"]
    assert len(rates["x"]) == 60
    # Five messages reached the provider 20 minutes ago and one failed 2 seconds later: all inside the hour.
    assert (sum(rates["sent"]), sum(rates["failed"])) == (5, 1)
    make_message(status=MessageStatus.SENT, created_at=timezone.now(), sent_at=timezone.now())
    make_message(status=MessageStatus.SENT, created_at=timezone.now(), sent_at=timezone.now() - timedelta(hours=2))
    counters_sweep(since=timezone.now() - timedelta(hours=1))  # rows written here without the services' signals
    rates = analyst_client.get("/reporting/").context["rates"]
    assert sum(rates["sent"]) == 6
    # The chart and the figures beside it come from the same counters.
    board = analyst_client.get("/api/v1/monitoring/dashboard").json()
    assert board["send_rate"]["60m"]["sent"] == sum(rates["sent"]) == 6


# --- Live monitoring ---------------------------------------------------------------------------


def test_monitoring_lists_inbound_messages_classified_and_masked(analyst_client, traffic):
    response = analyst_client.get("/reporting/monitoring/")
    text = _text(response)
    page = response.content.decode()
    assert "Opt-out keyword" in text and "What time?" in text and "Reply" in text
    assert 'aria-live="polite"' in page and 'id="inbound-rows"' in page
    # Analysts see masked phones.
    contact_phones = [m["from"] for m in response.context["inbound"]]
    assert all("*" in phone for phone in contact_phones)
    assert "Filtered by the carrier" in text and "30007" in text


def test_the_inbound_poll_returns_only_newer_messages_and_moves_the_cursor(analyst_client, traffic):
    first = analyst_client.get("/reporting/monitoring/")
    since = first.context["next_since"]
    empty = analyst_client.get(f"/reporting/monitoring/inbound/?since={since}")
    assert "<tr" not in empty.content.decode() and f"?since={since}" in empty.content.decode()
    newer = make_message(direction=Direction.INBOUND, status="received", created_at=timezone.now(), body="HELP")
    response = analyst_client.get(f"/reporting/monitoring/inbound/?since={since}")
    page = response.content.decode()
    assert f'data-inbound="{newer.pk}"' in page and "Help keyword" in page
    assert 'hx-swap-oob="true"' in page and f"?since={newer.pk}" in page
    assert page.count("<tr") == 1


def test_the_monitoring_status_partial_renders_health_and_failures(analyst_client, traffic):
    response = analyst_client.get("/reporting/monitoring/status/")
    text = _text(response)
    assert response.status_code == 200 and "Database" in text and "Filtered by the carrier" in text


def test_staff_with_the_full_phone_permission_see_full_numbers(client, traffic):
    from django.contrib.auth.models import Permission

    user = UserFactory(username="boss", role=STAFF)
    user.user_permissions.add(Permission.objects.get(codename="see_full_phone"))
    client.force_login(user)
    rows = client.get("/reporting/monitoring/").context["inbound"]
    assert all("*" not in row["from"] for row in rows)


# --- Campaign analytics ------------------------------------------------------------------------


def test_campaign_analytics_shows_the_funnel_failures_runs_and_export(analyst_client, traffic):
    campaign, run = traffic
    response = analyst_client.get(f"/reporting/campaigns/{campaign.pk}/")
    assert response.status_code == 200
    funnel = dict(response.context["funnel"])
    # An SMS campaign: SMS has no read receipts, so the page shows no read figure at all.
    assert funnel == {"Targeted": 5, "Sent": 4, "Delivered": 4, "Replied": 1}
    text = _text(response)
    assert "Filtered by the carrier" in text and "Opted out" in text and "opted_out" not in text
    assert "Read rate" not in text
    page = response.content.decode()
    assert f'href="/api/v1/reporting/campaigns/{campaign.pk}/export"' in page
    funnel_data = re.search(r'id="funnel-data"[^>]* data-chart="([^"]*)"', page).group(1)
    assert json.loads(html.unescape(funnel_data))["values"] == [5, 4, 4, 1]
    assert "<script" not in re.search(r'<div id="analytics-body".*', page, re.S).group(0)  # htmx would drop it
    assert f'<a href="?run={run.pk}&amp;bucket={response.context["bucket"]}">#{run.pk}</a>' in page
    assert "Open in the admin" not in page
    export = analyst_client.get(f"/api/v1/reporting/campaigns/{campaign.pk}/export")
    assert export.status_code == 200 and len(b"".join(export.streaming_content).splitlines()) == 7


def test_a_whatsapp_campaign_shows_reads_and_a_short_campaign_is_charted_per_minute(analyst_client, traffic):
    campaign, run = traffic
    Sender.objects.filter(pk=campaign.sender_id).update(channel="whatsapp")
    CampaignRun.objects.filter(pk=run.pk).update(finished_at=run.started_at + timedelta(seconds=30))
    response = analyst_client.get(f"/reporting/campaigns/{campaign.pk}/")
    assert dict(response.context["funnel"])["Read"] == 1 and "Read rate" in _text(response)
    assert response.context["bucket"] == "minute"
    assert response.context["timeline"]["y_title"] == "Messages per minute"
    assert analyst_client.get(f"/reporting/campaigns/{campaign.pk}/?bucket=hour").context["bucket"] == "hour"


def test_campaign_analytics_compares_runs_of_a_recurring_campaign(staff_client):
    campaign = make_campaign(name="Weekly digest", kind="recurring")
    now = timezone.now()
    first = make_run(campaign, at=now - timedelta(hours=3), total=1, sent=1)
    second = make_run(campaign, at=now - timedelta(hours=1), total=2, failed=2)
    add_recipient(first, message_status="delivered", sent=now - timedelta(hours=3), delivered_after=3)
    for _ in range(2):
        add_recipient(
            second,
            message_status="failed",
            state="failed",
            sent=now - timedelta(hours=1),
            failed_after=1,
            error_code="30003",
        )
    counters_recount()
    response = staff_client.get(f"/reporting/campaigns/{campaign.pk}/")
    rows = {row["run"].pk: row for row in response.context["runs"]}
    assert (rows[first.pk]["delivered"], rows[first.pk]["delivery_rate"]) == (1, 100.0)
    assert (rows[second.pk]["failed"], rows[second.pk]["delivered"]) == (2, 0)
    page = response.content.decode()
    assert "Open in the admin" in page and f"/admin/campaigns/campaign/{campaign.pk}/change/" in page
    one = staff_client.get(f"/reporting/campaigns/{campaign.pk}/?run={second.pk}&bucket=minute")
    assert dict(one.context["funnel"])["Targeted"] == 2 and one.context["bucket"] == "minute"
    assert staff_client.get(f"/reporting/campaigns/{campaign.pk}/?run=999999").status_code == 404


def test_campaign_analytics_refreshes_itself_only_while_its_figures_can_move(analyst_client, traffic):
    campaign, run = traffic  # a running run
    url = f"/reporting/campaigns/{campaign.pk}/?run={run.pk}&bucket=minute"
    page = analyst_client.get(url).content.decode()
    poller = re.search(r'<div id="analytics-body"([^>]*)>', page).group(1)
    assert 'hx-trigger="every 15s"' in poller and 'hx-select="#analytics-body"' in poller
    assert f'hx-get="{url.replace("&", "&amp;")}"' in poller  # the same run and bucket again
    assert "data-live" in page

    # Finished ten minutes ago: receipts may still come in.
    run.status, run.finished_at = "completed", timezone.now() - timedelta(minutes=10)
    run.save(update_fields=["status", "finished_at"])
    assert 'hx-trigger="every 15s"' in analyst_client.get(url).content.decode()

    # Finished two hours ago, nothing in flight: a still page.
    run.finished_at = timezone.now() - timedelta(hours=2)
    run.save(update_fields=["finished_at"])
    page = analyst_client.get(url).content.decode()
    assert re.search(r'<div id="analytics-body">', page) and "data-live" not in page

    # A message not yet sent keeps it live whatever the run says.
    add_recipient(run, state="sending", message_status=MessageStatus.QUEUED)
    counters_recount()
    assert 'hx-trigger="every 15s"' in analyst_client.get(url).content.decode()


def test_pages_and_the_admin_have_an_icon_and_favicon_ico_leads_to_it(client, staff_client):
    assert finders.find("favicon.svg")
    assert '<link rel="icon" href="/static/favicon' in client.get("/accounts/login/").content.decode()
    assert '<link rel="icon" href="/static/favicon' in staff_client.get("/admin/").content.decode()
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"].startswith("/static/favicon")
    assert client.get(response["Location"]).status_code == 200


def test_the_campaign_list_links_each_campaign_to_its_analytics(analyst_client, traffic):
    campaign, _run = traffic
    page = analyst_client.get("/reporting/campaigns/").content.decode()
    assert f'href="/reporting/campaigns/{campaign.pk}/"' in page and "Flash sale" in page


def test_the_admin_links_a_campaign_to_its_analytics(staff_client, traffic):
    campaign, _run = traffic
    link = f'href="/reporting/campaigns/{campaign.pk}/"'
    assert link in staff_client.get("/admin/campaigns/campaign/").content.decode()
    assert link in staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert 'href="/reporting/"' in staff_client.get("/admin/").content.decode()


# --- Static files and the import page's sample ---------------------------------------------------


def test_plotly_and_htmx_come_from_their_pip_packages(analyst_client):
    plotly_path = finders.find("plotly/plotly.min.js")
    assert plotly_path and "site-packages/plotly/package_data" in plotly_path
    assert "site-packages/django_htmx" in finders.find("django_htmx/htmx-2.min.js")
    for url in ("/static/plotly/plotly.min.js", "/static/reporting/charts.js", "/static/reporting/pages.css"):
        response = analyst_client.get(url)
        assert response.status_code == 200, url
    assert finders.find("plotly/package_data/plotly.min.js") is None


def test_the_import_page_offers_a_sample_csv_the_importer_accepts(staff_client, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    page = staff_client.get("/admin/audience/contact/import/").content.decode()
    assert 'href="/admin/audience/contact/import/sample.csv"' in page
    response = staff_client.get("/admin/audience/contact/import/sample.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {"phone", "name", "email", "channel", "locale", "timezone", "consent", "topics"} <= set(rows[0])
    job = ingest_services.import_job_create(
        source=ImportSource.ADMIN,
        upload=SimpleUploadedFile("sample.csv", response.content, content_type="text/csv"),
        options=ingest_services.import_options_clean(default_consent="opted_in"),
        actor="staff",
    )
    preview = ingest_preview.import_preview(job)
    assert preview.problems == [] and preview.counts["new"] == len(rows) == 3


def test_analysts_cannot_download_the_import_sample(analyst_client):
    assert analyst_client.get("/admin/audience/contact/import/sample.csv").status_code == 403


def test_an_unknown_campaign_is_a_404(analyst_client):
    assert analyst_client.get("/reporting/campaigns/987654/").status_code == 404


def test_an_old_contact_counts_in_the_contact_total(analyst_client):
    ContactFactory()
    assert "Contacts 1 " in _text(analyst_client.get("/reporting/"))
