"""What staff read is in words, not codes: consent events, the segment form, the import's dry run."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audience import services as audience
from audience.models import ConsentEvent, ConsentEventKind
from campaigns import services as campaigns
from campaigns.models import CampaignAction
from tests.factories import CampaignFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_consent_event_reads_as_words():
    first = ConsentEvent(kind=ConsentEventKind.CHANGE, from_status="", to_status="opted_in", source="import")
    change = ConsentEvent(kind=ConsentEventKind.CHANGE, from_status="opted_in", to_status="opted_out", source="keyword")
    assert str(first) == "Opted in (Import)"
    assert str(change) == "Opted in → Opted out (Keyword)"


def test_a_new_segment_form_has_an_empty_rule_box_not_null(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    page = client.get("/admin/campaigns/segment/add/").content.decode()
    assert ">null</textarea>" not in page


@pytest.mark.usefixtures("media_root")
def test_the_dry_run_shows_topics_as_a_list_and_attributes_as_pairs(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    content = "phone,name,topics,city,age\n+254712000001,A,events|promos,Nairobi,34\n"
    page = client.post(
        "/admin/audience/contact/import/",
        {
            "import_file": SimpleUploadedFile("c.csv", content.encode(), content_type="text/csv"),
            "resource": "0",
            "default_consent": "opted_in",
        },
    ).content.decode()
    assert "events, promos" in page and "{events,promos}" not in page
    assert "age: 34<br>city: Nairobi" in page


def test_a_campaigns_audit_list_reads_as_words_not_json(client):
    audience.contact_create(phone="+254712000001", name="A")
    campaign = CampaignFactory(name="Promo")
    run = campaigns.campaign_launch(campaign, actor="boss")
    CampaignAction.objects.create(
        campaign=campaign,
        action="mark_failed",
        from_status="running",
        to_status="running",
        detail={"messages": [11, 12], "count": 2, "run": run.pk, "status_after": {"failed": 2}},
    )
    client.force_login(UserFactory(username="boss", is_superuser=True))
    page = client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "Launched" in page and "Draft → Running" in page and f"run {run.pk}" in page
    assert "Marked unknown outcomes failed" in page and "2 messages" in page and "now 2 failed" in page
    assert '{"run"' not in page and "{&quot;run&quot;" not in page and "mark_failed" not in page
