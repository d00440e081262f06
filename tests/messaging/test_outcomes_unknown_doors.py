"""Outcomes unknown through every door: shown in the API, the admin and the analytics page; resolved by staff.

Each completed run here has 2 unknown outcomes (``completed_run_with_unknowns``): PHONES[0]'s
message was never created at the fake (its worker died before the call), PHONES[1]'s was (its
send timed out). The fake's list endpoint answers 404 until ``lookups_recover``.
"""

from datetime import timedelta

import pytest

from campaigns import services as campaigns
from campaigns.models import CampaignAction, Recipient
from messaging.models import Message, MessageResolution, MessageStatus
from messaging.services import create, send
from reporting.counters import counters_recount
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience, drain
from tests.factories import ContactFactory, UserFactory
from tests.unknown_outcomes import (
    PHONES,
    age,
    beat_upkeep,
    completed_run_with_unknowns,
    lookups_fail,
    lookups_recover,
    worker_died,
)

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db


@pytest.fixture
def run(fake, settings):
    return completed_run_with_unknowns(fake, settings)


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    return client


@pytest.fixture
def analyst_client(client):
    client.force_login(UserFactory(username="reader", role="Analysts"))
    return client


def _message(phone: str) -> Message:
    return Message.objects.get(to_address=phone)


def _url(run) -> str:
    return f"/api/v1/campaigns/{run.campaign_id}/unknown-outcomes/"


# --- Shown ---------------------------------------------------------------------------------


def test_the_api_shows_the_runs_unknown_outcomes_and_each_messages_give_up_time(run, analyst_api):
    [shown] = analyst_api.get(f"/api/v1/campaigns/{run.campaign_id}/runs/").json()
    assert (shown["status"], shown["sent"], shown["unknown"]) == ("completed", 2, 2)
    campaign = analyst_api.get(f"/api/v1/campaigns/{run.campaign_id}/").json()
    assert campaign["current_run"]["unknown"] == 2
    message = _message(PHONES[1])
    body = analyst_api.get(f"/api/v1/messages/{message.pk}/").json()
    assert body["status"] == "unknown"
    assert body["unknown_gives_up_at"] == (message.sending_at + timedelta(minutes=60)).isoformat().replace(
        "+00:00", "Z"
    )
    sent = analyst_api.get(f"/api/v1/messages/{_message(PHONES[2]).pk}/").json()
    assert sent["unknown_gives_up_at"] is None


def test_the_summary_and_the_analytics_page_count_the_unknown_outcomes(run, analyst_api, analyst_client):
    counters_recount([run.pk])
    summary = analyst_api.get(f"/api/v1/reporting/campaigns/{run.campaign_id}/summary").json()
    assert summary["unknown"] == 2
    assert summary["recipients"]["unknown"] == 2
    assert summary["messages"]["unknown"] == 2
    assert summary["messages"]["in_flight"] == summary["messages"]["by_status"]["queued"] == 2  # not the unknown
    page = analyst_client.get(f"/reporting/campaigns/{run.campaign_id}/").content.decode()
    assert 'data-testid="unknown"' in page and "2 outcomes unknown" in page


def test_the_analytics_page_says_nothing_of_unknown_outcomes_when_there_are_none(fake, analyst_client):
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:2]))
    drain(run)
    page = analyst_client.get(f"/reporting/campaigns/{run.campaign_id}/").content.decode()
    assert "outcomes unknown" not in page.lower() and 'data-testid="unknown"' not in page


def test_the_campaign_admin_shows_the_unknown_outcomes_with_their_give_up_time(run, staff_client):
    page = staff_client.get(f"/admin/campaigns/campaign/{run.campaign_id}/change/").content.decode()
    assert "2 outcomes unknown" in page and "the last gives up at" in page and "(in 5" in page
    assert "2 sent, 0 sending, 0 skipped, 0 failed, 2 unknown, 0 held, 0 pending of 4" in page  # the run's bar
    listing = staff_client.get("/admin/campaigns/campaign/").content.decode()
    assert f'/admin/campaigns/campaign/{run.campaign_id}/unknown-outcomes/">2</a>' in listing
    detail = staff_client.get(f"/admin/campaigns/campaign/{run.campaign_id}/unknown-outcomes/").content.decode()
    assert 'data-testid="unknown-runs"' in detail and f"#{_message(PHONES[0]).pk}" in detail
    message_page = staff_client.get(f"/admin/messaging/message/{_message(PHONES[0]).pk}/change/").content.decode()
    assert "Outcome unknown: look up again" in message_page and "min)" in message_page


# --- Resolved through the API --------------------------------------------------------------


def test_staff_look_up_a_runs_unknown_outcomes_again_through_the_api(run, staff_api, settings, fake):
    lookups_recover(settings, fake)
    response = staff_api.post(_url(run), {"action": "lookup", "run": run.pk}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "action": "lookup",
        "run": run.pk,
        "messages": 2,
        "by_status": {"failed": 1, "queued": 1},
        "remaining": 0,
    }
    created = {m["to"]: m["sid"] for m in fake.messages()}
    assert _message(PHONES[1]).provider_sid == created[PHONES[1]]  # found: adopted
    never = _message(PHONES[0])
    assert (never.status, never.error_code) == ("failed", "unsent")  # not created, and its run had ended
    run.refresh_from_db()
    assert (run.status, run.sent, run.failed, run.unknown) == ("completed", 3, 1, 0)
    assert_counts_match_recount(run)
    audit = CampaignAction.objects.get(campaign=run.campaign, action="lookup")
    assert (audit.actor, audit.detail["count"], audit.detail["run"]) == ("staff", 2, run.pk)
    assert sorted(MessageResolution.objects.values_list("action", "actor", "detail__status_after")) == [
        ("lookup", "staff", "failed"),
        ("lookup", "staff", "queued"),
    ]
    assert [fake.requests_to(phone) for phone in PHONES[:4]] == [0, 1, 1, 1]


def test_resending_reopens_the_completed_run_and_the_campaign_and_sends_each_once_more(run, staff_api, settings, fake):
    response = staff_api.post(_url(run), {"action": "resend"}, format="json")
    assert response.status_code == 200, response.content
    run.refresh_from_db()
    run.campaign.refresh_from_db()
    assert (run.status, run.finished_at, run.campaign.status) == ("running", None, "running")
    assert (run.pending, run.unknown) == (2, 0)
    assert_counts_match_recount(run)
    audit = CampaignAction.objects.get(campaign=run.campaign, action="resend")
    assert (audit.from_status, audit.to_status, audit.actor) == ("completed", "running", "staff")
    assert audit.detail == {
        "run": run.pk,
        "messages": sorted([_message(PHONES[0]).pk, _message(PHONES[1]).pk]),
        "count": 2,
        "reopened": True,
    }
    assert _message(PHONES[0]).error_message == "outcome unknown; resent by staff"

    lookups_recover(settings, fake)  # the sends go through the same base URL
    drain(run)
    run.refresh_from_db()
    run.campaign.refresh_from_db()
    assert (run.status, run.sent, run.campaign.status) == ("completed", 4, "completed")
    assert_counts_match_recount(run)
    # A deliberate new attempt: the one the provider had created is sent a second time, as asked.
    assert [fake.requests_to(phone) for phone in PHONES[:4]] == [1, 2, 1, 1]
    assert MessageResolution.objects.filter(action="resend", actor="staff").count() == 2


def test_a_cancelled_runs_unknown_outcomes_cannot_be_resent(fake, settings, staff_api):
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:3]))
    worker_died(run, 1)
    age(run)
    campaigns.campaign_cancel(run.campaign)
    run.refresh_from_db()
    assert (run.status, run.unknown) == ("cancelled", 1)

    response = staff_api.post(_url(run), {"action": "resend"}, format="json")
    assert response.status_code == 400
    assert "cancelled" in response.json()["action"][0]
    assert Message.objects.filter(status=MessageStatus.UNKNOWN).count() == 1
    assert not MessageResolution.objects.exists()
    assert not CampaignAction.objects.filter(action="resend").exists()

    failed = staff_api.post(_url(run), {"action": "fail"}, format="json")
    assert failed.status_code == 200 and failed.json()["by_status"] == {"failed": 1}
    run.refresh_from_db()
    assert (run.status, run.failed, run.unknown) == ("cancelled", 1, 0)
    assert_counts_match_recount(run)


def test_staff_mark_one_campaign_message_failed_through_the_messages_api(run, staff_api):
    message = _message(PHONES[1])
    response = staff_api.post(f"/api/v1/messages/{message.pk}/resolve/", {"action": "fail"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["error_code"]) == ("failed", "unknown")
    assert body["error_message"] == "outcome unknown; marked failed by staff"
    assert [(r["action"], r["actor"]) for r in body["resolutions"]] == [("fail", "staff")]
    recipient = Recipient.objects.get(message=message)
    assert (recipient.state, recipient.reason) == ("failed", "unknown")
    run.refresh_from_db()
    assert (run.failed, run.unknown) == (1, 1)
    assert_counts_match_recount(run)
    audit = CampaignAction.objects.get(action="mark_failed")
    assert audit.detail["messages"] == [message.pk]


def test_a_message_nothing_caused_is_looked_up_again_through_the_messages_api(fake, settings, staff_api):
    fake.fail(PHONES[5], "timeout")
    sender = campaign_with_audience(phones=[]).sender
    message, _ = create.message_create(contact=ContactFactory(phone=PHONES[5]), sender=sender, body="Hi", enqueue=False)
    send.message_send(message.pk)
    age_by = timedelta(minutes=5)
    Message.objects.filter(pk=message.pk).update(
        claimed_at=message.created_at - age_by, sending_at=message.created_at - age_by
    )
    lookups_fail(settings, fake)
    beat_upkeep()
    assert Message.objects.get(pk=message.pk).status == MessageStatus.UNKNOWN

    lookups_recover(settings, fake)
    response = staff_api.post(f"/api/v1/messages/{message.pk}/resolve/", {"action": "lookup"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "queued" and response.json()["provider_sid"] == fake.messages()[0]["sid"]
    assert MessageResolution.objects.get(message=message).detail == {"status_after": "queued"}
    assert fake.requests_to(PHONES[5]) == 1


def test_analysts_cannot_resolve_unknown_outcomes(run, analyst_api, anon_api):
    message = _message(PHONES[0])
    assert analyst_api.post(_url(run), {"action": "fail"}, format="json").status_code == 403
    assert analyst_api.post(f"/api/v1/messages/{message.pk}/resolve/", {"action": "fail"}).status_code == 403
    assert anon_api.post(_url(run), {"action": "fail"}, format="json").status_code in (401, 403)
    assert Message.objects.filter(status=MessageStatus.UNKNOWN).count() == 2
    assert not MessageResolution.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"action": "explode"}, "action", "not a valid choice"),
        ({}, "action", "required"),
        ({"action": "fail", "run": 999999}, "run", "has no run 999999"),
        ({"action": "fail", "messages": "all"}, "messages", "list"),
        ({"action": "fail", "messages": []}, "messages", "empty"),
        ({"action": "fail", "messages": [999999]}, "messages", "no message 999999"),
    ],
)
def test_a_bad_resolution_request_is_refused_naming_the_field(run, staff_api, body, field, fragment):
    response = staff_api.post(_url(run), body, format="json")
    assert response.status_code == 400
    assert fragment in " ".join(response.json()[field]).lower()


def test_a_message_that_is_not_an_unknown_outcome_is_refused(run, staff_api):
    sent = _message(PHONES[2])
    response = staff_api.post(_url(run), {"action": "fail", "messages": [sent.pk]}, format="json")
    assert response.status_code == 400 and f"{sent.pk} is queued" in response.json()["messages"][0]
    single = staff_api.post(f"/api/v1/messages/{sent.pk}/resolve/", {"action": "resend"}, format="json")
    assert single.status_code == 400 and "only outcomes unknown" in single.json()["messages"][0]
    staff_api.post(_url(run), {"action": "fail"}, format="json")
    again = staff_api.post(_url(run), {"action": "fail"}, format="json")
    assert again.status_code == 400 and again.json()["messages"] == [
        f"no outcome is unknown in campaign {run.campaign_id}"
    ]


# --- Resolved in the admin -----------------------------------------------------------------


def test_staff_mark_a_runs_unknown_outcomes_failed_from_the_campaign_admin(run, staff_client):
    url = f"/admin/campaigns/campaign/{run.campaign_id}/unknown-outcomes/"
    response = staff_client.post(url, {"action": "fail", "run": run.pk}, follow=True)
    assert response.status_code == 200
    assert "Mark failed: 2 messages (2 failed)." in response.content.decode()
    run.refresh_from_db()
    assert (run.failed, run.unknown) == (2, 0)
    assert_counts_match_recount(run)
    audit = CampaignAction.objects.get(action="mark_failed")
    assert (audit.actor, audit.detail["run"], audit.detail["count"]) == ("boss", run.pk, 2)
    assert MessageResolution.objects.filter(action="fail", actor="boss").count() == 2


def test_staff_resend_selected_messages_from_the_message_list_and_look_one_up_from_its_page(
    run, staff_client, settings, fake
):
    never, timed_out = _message(PHONES[0]), _message(PHONES[1])
    response = staff_client.post(
        "/admin/messaging/message/", {"action": "resend", "_selected_action": [never.pk, _message(PHONES[2]).pk]}
    )
    assert response.status_code == 302
    never.refresh_from_db()
    assert (never.status, never.error_message) == ("pending", "outcome unknown; resent by boss")
    run.refresh_from_db()
    assert (run.status, run.pending, run.unknown) == ("running", 1, 1)

    lookups_recover(settings, fake)
    page = f"/admin/messaging/message/{timed_out.pk}/"
    assert staff_client.post(f"{page}resolve/lookup/").status_code == 302
    timed_out.refresh_from_db()
    assert timed_out.status == MessageStatus.QUEUED and timed_out.provider_sid
    shown = staff_client.get(f"{page}change/").content.decode()
    assert "resolutions of an unknown outcome" in shown.lower() and "boss" in shown
    run.refresh_from_db()
    assert (run.sent, run.pending, run.unknown) == (3, 1, 0)
    assert_counts_match_recount(run)


def test_analysts_see_unknown_outcomes_in_the_admin_but_cannot_resolve_them(run, analyst_client):
    message = _message(PHONES[0])
    detail = analyst_client.get(f"/admin/campaigns/campaign/{run.campaign_id}/unknown-outcomes/")
    assert detail.status_code == 200 and 'name="action"' not in detail.content.decode()
    posted = analyst_client.post(f"/admin/campaigns/campaign/{run.campaign_id}/unknown-outcomes/", {"action": "fail"})
    assert posted.status_code == 403
    assert analyst_client.post(f"/admin/messaging/message/{message.pk}/resolve/fail/").status_code == 403
    listing = analyst_client.get("/admin/messaging/message/").content.decode()
    assert "Outcome unknown: mark failed" not in listing
    analyst_client.post("/admin/messaging/message/", {"action": "mark_failed", "_selected_action": [message.pk]})
    assert Message.objects.filter(status=MessageStatus.UNKNOWN).count() == 2
    assert not MessageResolution.objects.exists()
