"""The admin: events read-only, trigger fields validated in the campaign form, the live run progress bar."""

import re
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from audience import services as audience
from audience.models import Contact
from campaigns import services
from campaigns.models import Campaign, CampaignRun, Event
from campaigns.services import events
from config.roles import ANALYSTS
from tests.factories import MessageTemplateFactory, SenderFactory, UserFactory

pytestmark = pytest.mark.django_db

PHONE = "+254713000001"
FORMSETS = {
    "runs-TOTAL_FORMS": 0,
    "runs-INITIAL_FORMS": 0,
    "actions-TOTAL_FORMS": 0,
    "actions-INITIAL_FORMS": 0,
    "variants-TOTAL_FORMS": 0,
    "variants-INITIAL_FORMS": 0,
}


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    return client


@pytest.fixture
def triggered() -> Campaign:
    audience.contact_create(phone=PHONE, name="Amina")
    campaign = services.campaign_create(
        name="Shipped",
        kind="triggered",
        template=MessageTemplateFactory(body="Order {{ event.order_id }}"),
        sender=SenderFactory(),
        trigger_event="order_shipped",
    )
    services.campaign_launch(campaign)
    return campaign


def record(**properties) -> Event:
    contact = Contact.objects.get(phone=PHONE)
    event, _ = events.event_record(
        contact=contact, name="order_shipped", properties=properties, idempotency_key=uuid.uuid4().hex
    )
    return event


def campaign_form(template, sender, **fields):
    return {
        "name": "Welcome",
        "kind": "triggered",
        "template": template.pk,
        "sender": sender.pk,
        "schedule_type": "now",
        "cron_timezone": "UTC",
        **FORMSETS,
        **fields,
    }


def test_events_are_listed_searchable_and_read_only(staff_client, triggered):
    event = record(order_id="A-17")
    listing = staff_client.get("/admin/campaigns/event/", {"q": PHONE})
    assert listing.status_code == 200 and "order_shipped" in listing.content.decode()
    assert staff_client.get("/admin/campaigns/event/", {"name": "order_shipped"}).status_code == 200
    page = staff_client.get(f"/admin/campaigns/event/{event.pk}/change/")
    assert page.status_code == 200 and "A-17" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert staff_client.get("/admin/campaigns/event/add/").status_code == 403
    assert staff_client.post(f"/admin/campaigns/event/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()


def test_an_event_for_an_unknown_phone_is_listed_by_status_and_shows_no_phone(staff_client, triggered):
    [outcome] = events.events_store(
        [events.EventIn(0, "stranger-1", "", "order_shipped", {}, None, None, "+254713000777", False)]
    )
    assert outcome.status == "unknown_contact"
    listing = staff_client.get("/admin/campaigns/event/", {"status": "unknown_contact"})
    assert listing.status_code == 200 and "stranger-1" not in listing.content.decode()
    page = staff_client.get(f"/admin/campaigns/event/{outcome.event_id}/change/")
    assert page.status_code == 200 and "Unknown contact" in page.content.decode()
    assert "713000777" not in page.content.decode()


def test_trigger_fields_are_saved_from_the_campaign_form(staff_client):
    template, sender = MessageTemplateFactory(body="Welcome!"), SenderFactory()
    audience.topic_get_or_create("vip")
    response = staff_client.post(
        "/admin/campaigns/campaign/add/",
        campaign_form(
            template,
            sender,
            trigger_keyword="join",
            trigger_conditions='[{"property": "source", "op": "eq", "value": "sms"}]',
            trigger_contact_rule='NOT topic = "vip"',
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    campaign = Campaign.objects.get(name="Welcome")
    assert campaign.trigger_keyword == "JOIN"
    assert campaign.trigger_conditions == [{"property": "source", "op": "eq", "value": "sms"}]
    assert campaign.trigger_contact_rule == {"not": {"field": "topic", "op": "eq", "value": "vip"}}
    page = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "NOT topic = &quot;vip&quot;" in page  # shown back in the query language


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"trigger_conditions": '[{"property": "total", "op": "bigger", "value": 1}]'}, "[0].op"),
        ({"trigger_contact_rule": "age >>= 3"}, "column"),
        ({"trigger_keyword": "STOP"}, "consent or help keyword"),
        ({}, "an event name or a keyword"),
    ],
)
def test_the_campaign_form_refuses_a_bad_trigger_next_to_its_field(staff_client, fields, error):
    response = staff_client.post(
        "/admin/campaigns/campaign/add/", campaign_form(MessageTemplateFactory(), SenderFactory(), **fields)
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(error in message for messages in errors.values() for message in messages), errors
    assert not Campaign.objects.filter(name="Welcome").exists()


def test_the_progress_bar_shows_each_state_including_sending(staff_client, triggered):
    for n in range(4):
        record(order_id=str(n))
    run = CampaignRun.objects.get(campaign=triggered)
    CampaignRun.objects.filter(pk=run.pk).update(pending=1, sending=1, sent=2)  # mid-batch
    page = staff_client.get(f"/admin/campaigns/campaign/{triggered.pk}/change/").content.decode()
    bar = re.search(rf'<span class="run-progress" data-run="{run.pk}".*?</small></span>', page, re.S).group(0)
    assert 'data-active="true"' in bar and "<script" not in bar and "style=" not in bar
    assert "2 sent, 1 sending, 0 skipped, 0 failed, 0 held, 1 pending of 4" in bar
    assert 'data-part="sending" x="50.0" y="0" width="25.0"' in bar
    assert "campaigns/run_progress.js" in page


def test_the_progress_view_serves_fresh_counters_as_json(client, triggered):
    record(order_id="1")
    run = CampaignRun.objects.get(campaign=triggered)
    client.force_login(UserFactory(username="reader", role=ANALYSTS))
    response = client.get("/admin/campaigns/campaign/progress/", {"run": [run.pk, "x"]})
    assert response.status_code == 200
    [data] = response.json()["runs"]
    assert (data["id"], data["active"], data["total"], data["pending"], data["sending"]) == (run.pk, True, 1, 1, 0)
    assert [part["name"] for part in data["parts"]] == ["sent", "failed", "unknown", "skipped", "sending", "held"]


def test_the_progress_view_needs_a_login(client, triggered):
    response = client.get("/admin/campaigns/campaign/progress/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_progress_script_is_static_and_polls_the_json_view():
    script = Path(settings.BASE_DIR, "campaigns/static/campaigns/run_progress.js").read_text()
    assert 'searchParams.append("run"' in script and "setTimeout" in script
    assert "innerHTML" not in script and "eval(" not in script


def test_an_analyst_sees_a_triggered_campaign_and_its_events_read_only(client, triggered):
    audience.topic_get_or_create("vip")
    services.campaign_update(triggered, trigger_contact_rule='NOT topic = "vip"')
    event = record(order_id="A-1")
    client.force_login(UserFactory(username="reader", role=ANALYSTS))
    page = client.get(f"/admin/campaigns/campaign/{triggered.pk}/change/")
    assert page.status_code == 200 and "order_shipped" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert client.get(f"/admin/campaigns/event/{event.pk}/change/").status_code == 200
    assert client.get("/admin/campaigns/event/").status_code == 200
