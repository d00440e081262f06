"""CSV exports of a campaign's results and of the message list: streamed, formulas escaped, phones masked."""

import csv
import io

import pytest

from campaigns.models import Recipient
from tests.factories import ContactFactory
from tests.reporting.support import T0, add_recipient, make_campaign, make_message, make_run

pytestmark = pytest.mark.django_db


def _rows(response) -> list[dict]:
    assert response.status_code == 200, getattr(response, "content", b"")
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    data = b"".join(response.streaming_content)
    assert data.startswith("\ufeff".encode())  # Excel reads it as UTF-8, not its legacy code page
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


@pytest.fixture
def campaign():
    campaign = make_campaign()
    run1, run2 = make_run(campaign), make_run(campaign, at=T0.replace(day=21))
    contact = ContactFactory(phone="+254711000222")
    add_recipient(run1, contact=contact, message_status="delivered", sent=T0, delivered_after=3, price="-0.0075")
    add_recipient(
        run1,
        state="failed",
        message_status="failed",
        error_code="30007",
        error_message='=HYPERLINK("http://evil.example","click")',
    )
    add_recipient(run1, state="skipped", reason="missing_variable", detail="@SUM(A1:A9)", message_status=None)
    add_recipient(run2, message_status="queued")
    return campaign, run1, run2


def test_campaign_export_has_one_row_per_recipient_with_outcome(staff_api, campaign):
    campaign_obj, run1, run2 = campaign
    rows = _rows(staff_api.get(f"/api/v1/reporting/campaigns/{campaign_obj.pk}/export"))
    assert len(rows) == 4
    assert [r["run_id"] for r in rows] == [str(run1.pk)] * 3 + [str(run2.pk)]
    delivered, failed, skipped, _queued = rows
    assert delivered["phone"] == "+254711000222" and delivered["message_status"] == "delivered"
    assert delivered["price"] == "-0.00750" and delivered["delivered_at"].startswith("2026-11-20T09:00:03")
    assert failed["error_code"] == "30007" and failed["error_meaning"] == "Filtered by the carrier"
    assert skipped["skip_reason"] == "missing_variable" and skipped["message_id"] == ""


def test_campaign_export_escapes_formulas(staff_api, campaign):
    campaign_obj, *_ = campaign
    rows = _rows(staff_api.get(f"/api/v1/reporting/campaigns/{campaign_obj.pk}/export"))
    assert rows[1]["error_message"] == '\'=HYPERLINK("http://evil.example","click")'
    assert rows[2]["detail"] == "'@SUM(A1:A9)"
    assert rows[0]["phone"] == "+254711000222"  # a plain signed number is no formula


def test_campaign_export_of_one_run_and_masking_for_analysts(analyst_api, campaign):
    campaign_obj, run1, run2 = campaign
    rows = _rows(analyst_api.get(f"/api/v1/reporting/campaigns/{campaign_obj.pk}/export", {"run": run1.pk}))
    assert len(rows) == 3
    # A masked number is no plain number any more: a spreadsheet would run it, so it is escaped too.
    assert rows[0]["phone"] == "'+2547******22"
    response = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign_obj.pk}/export", {"run": "x"})
    assert response.status_code == 400 and "run" in response.json()


def test_message_export_uses_the_list_filters(analyst_api, campaign):
    campaign_obj, *_ = campaign
    make_message(status="read")  # outside the campaign
    rows = _rows(analyst_api.get("/api/v1/reporting/messages/export", {"campaign": campaign_obj.pk}))
    assert len(rows) == 3
    assert {r["status"] for r in rows} == {"delivered", "failed", "queued"}
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["error_message"].startswith("'=HYPERLINK")
    assert failed["error_meaning"] == "Filtered by the carrier"
    assert all("*" in r["to_address"] for r in rows)
    response = analyst_api.get("/api/v1/reporting/messages/export", {"status": "nope"})
    assert response.status_code == 400 and "status" in response.json()


def test_exports_need_a_login(anon_api, campaign):
    campaign_obj, *_ = campaign
    assert anon_api.get(f"/api/v1/reporting/campaigns/{campaign_obj.pk}/export").status_code == 401
    assert anon_api.get("/api/v1/reporting/messages/export").status_code == 401


def test_a_large_export_streams_in_chunks(staff_api):
    campaign = make_campaign()
    run = make_run(campaign)
    contacts = ContactFactory.create_batch(2500)
    Recipient.objects.bulk_create(Recipient(run=run, contact=c, state="pending") for c in contacts)
    response = staff_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/export")
    chunks = iter(response.streaming_content)
    assert next(chunks) == "\ufeff".encode()
    header = next(chunks)
    assert header.startswith(b"run_id,recipient_id")
    rest = list(chunks)
    assert len(rest) == 2500  # one chunk per row: nothing is built in memory first
