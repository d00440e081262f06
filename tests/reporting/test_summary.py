"""GET /api/v1/reporting/campaigns/{id}/summary: every figure checked against a hand count."""

from datetime import timedelta

import pytest

from messaging.models import Direction, MessageStatus
from reporting.counters import counters_sweep
from tests.factories import ContactFactory
from tests.reporting.support import (
    T0,
    add_recipient,
    make_campaign,
    make_message,
    make_run,
    opt_out_event,
    run_counters_fill,
)

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)


@pytest.fixture
def campaign_data():
    """Run 1: 10 recipients (2 skipped, 1 held, 7 messages); run 2: 2 delivered messages."""
    campaign = make_campaign()
    run1 = make_run(campaign, at=T0)
    run2 = make_run(campaign, at=T0 + 24 * H)
    add_recipient(run1, state="skipped", reason="opted_out", message_status=None)
    add_recipient(run1, state="skipped", reason="capped", message_status=None)
    add_recipient(run1, state="held", message_status=None)
    m = {}
    m["read"] = add_recipient(run1, message_status="read", sent=T0, delivered_after=10, read_after=100, price="-0.0075")
    m["delivered1"] = add_recipient(run1, message_status="delivered", sent=T0, delivered_after=20, price="-0.0075")
    m["delivered2"] = add_recipient(run1, message_status="delivered", sent=T0 + H, delivered_after=60, price="-0.0075")
    m["sent"] = add_recipient(run1, message_status="sent", sent=T0 + H, price="-0.0075")
    m["undelivered"] = add_recipient(
        run1, message_status="undelivered", sent=T0, failed_after=5, error_code="30003", price="-0.0075"
    )
    m["failed1"] = add_recipient(run1, state="failed", message_status="failed", error_code="30007")
    m["failed2"] = add_recipient(run1, state="failed", message_status="failed", error_code="30007")
    r2a = add_recipient(run2, message_status="delivered", sent=T0 + 24 * H, delivered_after=4)
    add_recipient(run2, message_status="delivered", sent=T0 + 24 * H, delivered_after=6)

    # Opt-outs: one within 72 h of the message, one after 80 h, one of a contact not in the campaign.
    opt_out_event(m["read"].contact, T0 + 2 * H)
    opt_out_event(m["delivered1"].contact, T0 + 80 * H)
    opt_out_event(ContactFactory(), T0 + H)
    # Replies: two after the message (same contact), one before a message was sent, one from a stranger.
    for at in (T0 + 3 * H, T0 + 4 * H):
        make_message(contact=m["delivered1"].contact, direction=Direction.INBOUND, status="received", created_at=at)
    make_message(contact=m["sent"].contact, direction=Direction.INBOUND, status="received", created_at=T0)
    make_message(direction=Direction.INBOUND, status="received", created_at=T0 + H)
    counters_sweep(since=T0)
    run_counters_fill(run1, run2)
    return campaign, run1, run2, m, r2a


def test_summary_of_all_runs_matches_a_hand_count(analyst_api, campaign_data):
    campaign, run1, run2, _m, _r2a = campaign_data
    response = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/summary")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["runs"] == [run1.pk, run2.pk]
    assert data["audience"] == 12
    assert data["targeted"] == 10
    assert data["held"] == 1
    assert data["skipped_by_reason"] == {"capped": 1, "opted_out": 1}
    messages = data["messages"]
    assert messages["total"] == 9
    assert messages["sent"] == 7  # read, 4 delivered, sent, undelivered
    assert messages["delivered"] == 5
    assert messages["read"] == 1
    assert messages["undelivered"] == 1
    assert messages["failed"] == 2
    assert data["delivery_rate"] == round(5 / 7, 4)
    assert data["read_rate"] == round(1 / 5, 4)
    assert data["failures"] == [
        {"error_code": "30007", "meaning": "Filtered by the carrier", "count": 2, "by_status": {"failed": 2}},
        {
            "error_code": "30003",
            "meaning": "Unreachable destination handset",
            "count": 1,
            "by_status": {"undelivered": 1},
        },
    ]
    assert data["opt_outs_72h"] == 1
    assert data["replies"] == 2
    assert data["repliers"] == 1
    # Delivery times: 10, 20, 60, 4, 6 seconds -> median 10.
    assert data["median_seconds_to_deliver"] == 10.0
    assert data["cost"] == [{"currency": "USD", "amount": "0.03750", "priced_messages": 5}]


def test_summary_of_one_run(analyst_api, campaign_data):
    campaign, _run1, run2, _m, _r2a = campaign_data
    data = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/summary?run={run2.pk}").json()
    assert data["runs"] == [run2.pk]
    assert data["audience"] == 2
    assert data["messages"]["by_status"]["delivered"] == 2
    assert data["delivery_rate"] == 1.0
    assert data["read_rate"] == 0.0
    assert data["median_seconds_to_deliver"] == 5.0
    assert data["opt_outs_72h"] == 0
    assert data["failures"] == []
    assert data["cost"] == []


def test_timeline_buckets_by_hour_and_minute(analyst_api, campaign_data):
    campaign, run1, *_ = campaign_data
    url = f"/api/v1/reporting/campaigns/{campaign.pk}/summary?run={run1.pk}"
    hours = analyst_api.get(url).json()["timeline"]
    assert [(p["at"][:16], p["sent"], p["delivered"], p["read"], p["failed"]) for p in hours] == [
        ("2026-11-20T09:00", 3, 2, 1, 1),
        ("2026-11-20T10:00", 2, 1, 0, 0),
    ]
    minutes = analyst_api.get(url + "&bucket=minute").json()
    assert minutes["bucket"] == "minute"
    assert sum(p["sent"] for p in minutes["timeline"]) == 5
    # 09:00 (sends, two deliveries, the failure at +5 s), 09:01 (read at +100 s), 10:00, 10:01 (delivered at +60 s)
    assert [(p["at"][11:16], p["sent"], p["delivered"], p["read"], p["failed"]) for p in minutes["timeline"]] == [
        ("09:00", 3, 2, 0, 1),
        ("09:01", 0, 0, 1, 0),
        ("10:00", 2, 0, 0, 0),
        ("10:01", 0, 1, 0, 0),
    ]


def test_summary_follows_status_callbacks(analyst_api, django_capture_on_commit_callbacks):
    from messaging.services.status import status_callback_record

    campaign = make_campaign()
    run = make_run(campaign)
    recipient = add_recipient(run, message_status=MessageStatus.QUEUED)
    counters_sweep(since=T0)
    sid = recipient.message.provider_sid
    with django_capture_on_commit_callbacks(execute=True):
        status_callback_record(provider_sid=sid, status="failed", error_code="63016", payload={"MessageSid": sid})
    data = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/summary").json()
    assert data["messages"]["failed"] == 1
    assert data["failures"][0]["error_code"] == "63016"
    assert "24-hour window" in data["failures"][0]["meaning"]


def test_bad_summary_parameters_are_named(analyst_api, campaign_data):
    campaign, *_ = campaign_data
    other_run = make_run(make_campaign("Other"))
    base = f"/api/v1/reporting/campaigns/{campaign.pk}/summary"
    response = analyst_api.get(f"{base}?run={other_run.pk}")
    assert response.status_code == 400 and "run" in response.json()
    response = analyst_api.get(f"{base}?bucket=day")
    assert response.status_code == 400 and "bucket" in response.json()
    response = analyst_api.get(f"{base}?run=abc")
    assert response.status_code == 400 and "run" in response.json()
    assert analyst_api.get("/api/v1/reporting/campaigns/999999/summary").status_code == 404


def test_summary_permissions(anon_api, analyst_api, staff_api, campaign_data):
    campaign, *_ = campaign_data
    url = f"/api/v1/reporting/campaigns/{campaign.pk}/summary"
    assert anon_api.get(url).status_code == 401
    assert analyst_api.post(url, {}).status_code == 403
    assert staff_api.post(url, {}).status_code == 405
    assert staff_api.get(url).status_code == 200


def test_an_empty_campaign_has_zero_figures_and_no_rates(analyst_api):
    campaign = make_campaign()
    data = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/summary").json()
    assert data["audience"] == 0 and data["messages"]["total"] == 0
    assert data["delivery_rate"] is None and data["median_seconds_to_deliver"] is None
    assert data["timeline"] == []
