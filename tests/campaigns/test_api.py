import pytest
from django_celery_beat.models import PeriodicTask

from audience import services as audience
from campaigns.models import Campaign, CampaignRun
from tests.factories import MessageTemplateFactory, SenderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def payload():
    return {"name": "Spring sale", "template": MessageTemplateFactory().pk, "sender": SenderFactory().pk}


def test_anonymous_401_and_analyst_read_only(anon_api, analyst_api, payload):
    assert anon_api.get("/api/v1/campaigns/").status_code == 401
    assert analyst_api.get("/api/v1/campaigns/").status_code == 200
    assert analyst_api.post("/api/v1/campaigns/", payload, format="json").status_code == 403
    campaign = Campaign.objects.create(name="x", template_id=payload["template"], sender_id=payload["sender"])
    for verb in ("launch", "pause", "resume", "cancel", "dry-run", "schedule"):
        assert analyst_api.post(f"/api/v1/campaigns/{campaign.pk}/{verb}").status_code == 403
    assert not CampaignRun.objects.exists()


def test_create_schedule_and_see_the_periodic_task(staff_api, payload):
    created = staff_api.post(
        "/api/v1/campaigns/",
        {
            **payload,
            "kind": "recurring",
            "schedule_type": "cron",
            "cron": "0 9 * * 1",
            "cron_timezone": "Africa/Nairobi",
            "quiet_start": "21:00",
            "quiet_end": "08:00",
            "frequency_cap": 2,
            "frequency_window": "1 00:00:00",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    campaign_id = created.json()["id"]
    scheduled = staff_api.post(f"/api/v1/campaigns/{campaign_id}/schedule")
    assert scheduled.status_code == 200
    assert scheduled.json()["status"] == "scheduled"
    assert scheduled.json()["periodic_task"] == f"campaign:{campaign_id}"
    assert PeriodicTask.objects.get(name=f"campaign:{campaign_id}").crontab.hour == "9"
    actions = staff_api.get(f"/api/v1/campaigns/{campaign_id}/actions").json()
    assert [(a["action"], a["actor"]) for a in actions] == [("schedule", "staff"), ("create", "staff")]


def test_bad_campaign_input_names_the_field(staff_api, payload):
    response = staff_api.post("/api/v1/campaigns/", {**payload, "mps": 1000}, format="json")
    assert response.status_code == 400 and "mps" in response.json()
    response = staff_api.post("/api/v1/campaigns/", {**payload, "quiet_start": "21:00"}, format="json")
    assert response.status_code == 400 and "quiet_end" in response.json()
    assert not Campaign.objects.exists()


def test_dry_run_then_launch_pause_resume_cancel(staff_api, payload):
    audience.contact_create(phone="+254712000001", name="A")
    audience.contact_create(phone="+254712000002", name="B")
    campaign_id = staff_api.post("/api/v1/campaigns/", payload, format="json").json()["id"]
    dry = staff_api.post(f"/api/v1/campaigns/{campaign_id}/dry-run")
    assert dry.status_code == 200
    assert (dry.json()["audience"], dry.json()["to_send"], len(dry.json()["samples"])) == (2, 2, 2)
    assert not CampaignRun.objects.exists()
    launched = staff_api.post(f"/api/v1/campaigns/{campaign_id}/launch")
    assert launched.status_code == 201 and launched.json()["total"] == 2
    # A double click lands on the same run; nothing is snapshotted twice.
    again = staff_api.post(f"/api/v1/campaigns/{campaign_id}/launch")
    assert again.json()["id"] == launched.json()["id"]
    assert CampaignRun.objects.count() == 1
    assert staff_api.post(f"/api/v1/campaigns/{campaign_id}/pause").json()["status"] == "paused"
    assert staff_api.post(f"/api/v1/campaigns/{campaign_id}/resume").json()["status"] == "running"
    cancelled = staff_api.post(f"/api/v1/campaigns/{campaign_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["current_run"]["status"] == "cancelled"
    refused = staff_api.post(f"/api/v1/campaigns/{campaign_id}/resume")
    assert refused.status_code == 400 and "cannot resume a cancelled campaign" in str(refused.json())


def test_only_drafts_and_cancelled_campaigns_can_be_deleted(staff_api, payload):
    audience.contact_create(phone="+254712000001", name="A")
    campaign_id = staff_api.post("/api/v1/campaigns/", payload, format="json").json()["id"]
    staff_api.post(f"/api/v1/campaigns/{campaign_id}/launch")
    assert staff_api.delete(f"/api/v1/campaigns/{campaign_id}/").status_code == 400
    staff_api.post(f"/api/v1/campaigns/{campaign_id}/cancel")
    assert staff_api.delete(f"/api/v1/campaigns/{campaign_id}/").status_code == 204


def test_a_cancelled_campaign_is_duplicated_into_a_draft_and_launching_to_nobody_says_why(
    staff_api, analyst_api, payload
):
    campaign_id = staff_api.post("/api/v1/campaigns/", payload, format="json").json()["id"]
    refused = staff_api.post(f"/api/v1/campaigns/{campaign_id}/launch")
    assert refused.status_code == 400
    assert "nobody would receive this campaign now: the audience is empty" in str(refused.json())
    assert not CampaignRun.objects.exists()

    staff_api.post(f"/api/v1/campaigns/{campaign_id}/cancel")
    assert analyst_api.post(f"/api/v1/campaigns/{campaign_id}/duplicate").status_code == 403
    copy = staff_api.post(f"/api/v1/campaigns/{campaign_id}/duplicate")
    assert copy.status_code == 201
    body = copy.json()
    assert (body["status"], body["name"]) == ("draft", f"{payload['name']} (copy)")
    assert body["template"] == payload["template"] and body["id"] != campaign_id
