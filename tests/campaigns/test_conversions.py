"""Conversions: goal events attributed exactly once to the campaign message or click that earned them."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns import services
from campaigns.models import Campaign, Conversion, Event, Recipient
from campaigns.services.arms import CONTROL_ARM
from campaigns.services.attribution import conversions_attribute
from messaging.models import LinkClick
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    LinkFactory,
    MessageTemplateFactory,
    SenderFactory,
    VariantFactory,
)
from tests.reporting.support import add_recipient, make_campaign, make_run

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
DAY = timedelta(days=1)


def goal(campaign: Campaign, **fields) -> Campaign:
    values = {"goal_event": "order_placed", "goal_window": timedelta(days=3), "goal_model": "last_message", **fields}
    Campaign.objects.filter(pk=campaign.pk).update(**values)
    campaign.refresh_from_db()
    return campaign


def reached(campaign: Campaign, contact, *, at, status="delivered"):
    run = campaign.runs.first() or make_run(campaign, at=at - timedelta(minutes=5))
    return add_recipient(run, contact=contact, message_status=status, sent=at, delivered_after=2)


def event(contact, occurred_at, *, key=None, properties=None) -> Event:
    return Event.objects.create(
        contact=contact,
        name="order_placed",
        properties={"value": 49.9, "currency": "eur"} if properties is None else properties,
        occurred_at=occurred_at,
        idempotency_key=key or f"k-{contact.pk}-{occurred_at.timestamp()}",
    )


def attribute() -> int:
    return conversions_attribute(now=timezone.now() + timedelta(seconds=30))


def test_an_event_within_the_window_is_attributed_with_its_value():
    campaign = goal(make_campaign())
    contact = ContactFactory()
    recipient = reached(campaign, contact, at=NOW - 2 * DAY)
    happened = event(contact, NOW - DAY)
    assert attribute() == 1
    conversion = Conversion.objects.get()
    assert (conversion.event_id, conversion.campaign_id, conversion.run_id) == (
        happened.pk,
        campaign.pk,
        recipient.run_id,
    )
    assert (conversion.recipient_id, conversion.message_id) == (recipient.pk, recipient.message_id)
    assert (conversion.value, conversion.currency, conversion.model) == (Decimal("49.9000"), "EUR", "last_message")
    assert conversion.touched_at == recipient.message.delivered_at


def test_an_event_after_the_window_or_before_the_message_is_not_attributed():
    campaign = goal(make_campaign())
    late, early = ContactFactory(), ContactFactory()
    reached(campaign, late, at=NOW - 5 * DAY)
    event(late, NOW - DAY)  # 4 days after the message, the window is 3
    reached(campaign, early, at=NOW - DAY)
    event(early, NOW - 2 * DAY)  # before the message
    assert attribute() == 0
    assert not Conversion.objects.exists()


def test_an_event_of_a_contact_the_campaign_never_reached_or_whose_message_failed_is_not_attributed():
    campaign = goal(make_campaign())
    failed = ContactFactory()
    reached(campaign, failed, at=NOW - DAY, status="failed")
    event(failed, NOW)
    event(ContactFactory(), NOW)
    assert attribute() == 0


def test_a_replayed_event_and_a_second_sweep_make_one_conversion(staff_api):
    campaign = goal(make_campaign())
    contact = ContactFactory()
    reached(campaign, contact, at=NOW - DAY)
    body = {"contact": contact.pk, "name": "order_placed", "properties": {"value": 20, "currency": "USD"}}
    for _ in range(2):
        response = staff_api.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-77")
        assert response.status_code in (200, 201), response.json()
    assert attribute() == 1
    assert attribute() == 0
    assert Conversion.objects.count() == 1


def test_goal_conditions_use_the_event_condition_language():
    campaign = goal(make_campaign(), goal_conditions=[{"property": "value", "op": "gte", "value": 100}])
    small, big = ContactFactory(), ContactFactory()
    reached(campaign, small, at=NOW - DAY)
    reached(campaign, big, at=NOW - DAY)
    event(small, NOW, properties={"value": 20})
    event(big, NOW, properties={"value": 150})
    assert attribute() == 1
    assert Conversion.objects.get().contact_id == big.pk


def test_last_click_needs_a_click_in_the_window_and_beats_an_earlier_message():
    by_message = goal(make_campaign("Newsletter"))
    by_click = goal(make_campaign("Flash sale"), goal_model="last_click")
    contact, unclicked = ContactFactory(), ContactFactory()
    reached(by_message, contact, at=NOW - 2 * DAY)
    clicked = reached(by_click, contact, at=NOW - 3 * DAY)
    link = LinkFactory(message=clicked.message)
    click_at = NOW - DAY
    LinkClick.objects.create(link=link, key="00000000-0000-0000-0000-000000000001", clicked_at=click_at)
    reached(by_click, unclicked, at=NOW - DAY)  # received, never clicked: nothing for a last-click goal
    event(contact, NOW)
    event(unclicked, NOW)
    assert attribute() == 1
    conversion = Conversion.objects.get()
    assert (conversion.campaign_id, conversion.model, conversion.touched_at) == (by_click.pk, "last_click", click_at)


def test_the_latest_message_wins_between_two_campaigns():
    older, newer = goal(make_campaign("Older")), goal(make_campaign("Newer"))
    contact = ContactFactory()
    reached(older, contact, at=NOW - 2 * DAY)
    reached(newer, contact, at=NOW - DAY)
    event(contact, NOW)
    attribute()
    assert Conversion.objects.get().campaign_id == newer.pk


def test_an_event_is_not_looked_at_before_it_settles():
    campaign = goal(make_campaign())
    contact = ContactFactory()
    reached(campaign, contact, at=NOW - DAY)
    event(contact, NOW)
    assert conversions_attribute(now=timezone.now()) == 0  # clicks just before it may still be draining
    assert attribute() == 1


def test_a_campaign_goal_is_validated_naming_the_field(staff_api):
    template, sender = MessageTemplateFactory(), SenderFactory()
    data = {
        "name": "Goals",
        "template": template.pk,
        "sender": sender.pk,
        "goal_event": "order_placed",
        "goal_conditions": [{"property": "value", "op": "bigger", "value": 1}],
        "link_params": {"utm_source": "sms"},
    }
    response = staff_api.post("/api/v1/campaigns/", data, format="json")
    assert response.status_code == 400
    assert "goal_conditions" in str(response.json())
    data["goal_conditions"] = [{"property": "value", "op": "gte", "value": 1}]
    data["link_params"] = ["utm_source"]
    response = staff_api.post("/api/v1/campaigns/", data, format="json")
    assert response.status_code == 400 and "link_params" in str(response.json())
    data["link_params"] = {"utm_source": "sms", "utm_campaign": "spring"}
    response = staff_api.post("/api/v1/campaigns/", data, format="json")
    assert response.status_code == 201, response.json()
    campaign = Campaign.objects.get(name="Goals")
    assert (campaign.goal_window, campaign.goal_model) == (timedelta(days=3), "last_message")
    assert campaign.link_params == {"utm_source": "sms", "utm_campaign": "spring"}


def test_an_analyst_cannot_set_a_goal(analyst_api):
    campaign = services.campaign_create(name="Read only", template=MessageTemplateFactory(), sender=SenderFactory())
    response = analyst_api.patch(f"/api/v1/campaigns/{campaign.pk}/", {"goal_event": "x"}, format="json")
    assert response.status_code == 403
    campaign.refresh_from_db()
    assert campaign.goal_event == ""


def test_staff_set_the_goal_and_utm_parameters_in_the_admin(client):
    from tests.factories import UserFactory

    client.force_login(UserFactory(username="boss", is_superuser=True))
    template, sender = MessageTemplateFactory(), SenderFactory()
    form = {
        "name": "Admin goal",
        "kind": "one_off",
        "template": template.pk,
        "sender": sender.pk,
        "schedule_type": "now",
        "cron_timezone": "UTC",
        "link_params": '{"utm_source": "sms"}',
        "goal_event": "order_placed",
        "goal_conditions": '[{"property": "value", "op": "gt", "value": 0}]',
        "goal_window": "2 00:00:00",
        "goal_model": "last_click",
        "runs-TOTAL_FORMS": 0,
        "runs-INITIAL_FORMS": 0,
        "actions-TOTAL_FORMS": 0,
        "actions-INITIAL_FORMS": 0,
        "variants-TOTAL_FORMS": 0,
        "variants-INITIAL_FORMS": 0,
    }
    page = client.get("/admin/campaigns/campaign/add/").content.decode()
    assert 'name="goal_event"' in page and 'name="link_params"' in page
    response = client.post("/admin/campaigns/campaign/add/", {**form, "goal_conditions": '[{"op": "gt"}]'})
    assert response.status_code == 200 and "goal_conditions" in response.content.decode()
    response = client.post("/admin/campaigns/campaign/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    campaign = Campaign.objects.get(name="Admin goal")
    assert (campaign.goal_event, campaign.goal_window, campaign.goal_model) == ("order_placed", 2 * DAY, "last_click")
    assert campaign.link_params == {"utm_source": "sms"}


def test_the_control_group_is_measured_for_the_goal_without_a_message(analyst_api):
    contacts = ContactFactory.create_batch(40)
    campaign = CampaignFactory(control_share=50)
    VariantFactory(campaign=campaign, label="A")
    VariantFactory(campaign=campaign, label="B")
    goal(campaign)
    run = services.campaign_launch(campaign)
    held_out = Recipient.objects.filter(run=run, arm=CONTROL_ARM, reason="control").select_related("contact")
    control = held_out.first()
    assert control is not None and control.message_id is None
    outsider = ContactFactory()  # never in the campaign: not measured
    event(control.contact, timezone.now(), properties={"value": 20, "currency": "usd"})
    event(outsider, timezone.now())
    assert attribute() == 1
    conversion = Conversion.objects.get()
    assert (conversion.recipient_id, conversion.message_id, conversion.run_id) == (control.pk, None, run.pk)
    arms = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/arms").json()["arms"]
    by_label = {arm["label"]: arm for arm in arms}
    assert by_label["Control"]["conversions"] == 1 and Decimal(by_label["Control"]["revenue"]) == 20
    summary = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/summary").json()
    assert summary["conversions"]["count"] == 0  # the campaign's own figure counts what its messages earned
    assert len(contacts) == 40
