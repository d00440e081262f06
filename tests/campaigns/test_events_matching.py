"""Events fire running triggered campaigns: by name, property conditions and contact rules, through the run.

Sends go through the real twilio client to the fake Twilio server, paced by the run's dispatcher.
"""

import datetime as dt
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from audience import services as audience
from audience.models import ConsentSource, ConsentStatus, Contact
from campaigns import services
from campaigns.models import Campaign, CampaignRun, Event, Recipient
from campaigns.services import events, upkeep
from messaging.models import Message, MessageTemplate, Sender
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience, drain

fake = delivery.fake
pytestmark = pytest.mark.django_db

PHONE = delivery.PHONES[0]


def triggered(name="Shipped", body="Hi {{ name }}, order {{ event.order_id }} shipped", **fields) -> Campaign:
    """A running triggered campaign (its long-lived run open) on the delivery tests' sender."""
    sender = Sender.objects.first()
    if sender is None:  # the first campaign of a test: contacts and the paced sender of the delivery tests
        base = campaign_with_audience(phones=delivery.PHONES[:2])
        sender = base.sender
        base.delete()
    template = MessageTemplate.objects.create(name=f"t-{name}", channel="sms", body=body)
    fields.setdefault("trigger_event", "order_shipped")
    campaign = services.campaign_create(name=name, kind="triggered", template=template, sender=sender, **fields)
    services.campaign_launch(campaign)
    return campaign


def post(contact, name="order_shipped", key=None, **properties) -> Event:
    event, _ = events.event_record(
        contact=contact, name=name, properties=properties, idempotency_key=key or uuid.uuid4().hex
    )
    return event


def contact(phone=PHONE) -> Contact:
    return Contact.objects.get(phone=phone)


def run_of(campaign) -> CampaignRun:
    return CampaignRun.objects.get(campaign=campaign)


def test_a_matching_event_sends_the_template_with_its_properties_once(fake):
    campaign = triggered()
    event = post(contact(), order_id="A-17")
    assert list(event.matched_campaigns.all()) == [campaign]
    run = run_of(campaign)
    drain(run)
    assert fake.requests_to(PHONE) == 1
    assert [m["body"] for m in fake.messages()] == [f"Hi C{PHONE[-2:]}, order A-17 shipped"]
    recipient = Recipient.objects.get(event=event)
    assert (recipient.run_id, recipient.state, recipient.message.source) == (run.pk, "sent", recipient)
    assert_counts_match_recount(run)


def test_the_run_stays_open_so_later_events_send_too(fake):
    campaign = triggered()
    drain(run_of(campaign))
    for order in ("A-1", "A-2"):
        post(contact(), order_id=order)
        drain(run_of(campaign))
    run = run_of(campaign)
    campaign.refresh_from_db()
    assert (run.status, campaign.status, run.sent, run.total) == ("running", "running", 2, 2)
    assert fake.requests_to(PHONE) == 2
    assert_counts_match_recount(run)


def test_launching_a_running_triggered_campaign_again_returns_its_run():
    campaign = triggered()
    assert services.campaign_launch(campaign).pk == run_of(campaign).pk
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1


def test_another_event_name_matches_nothing_and_sends_nothing():
    campaign = triggered()
    event = post(contact(), name="order_created", order_id="A-17")
    assert not event.matched_campaigns.exists()
    assert not Recipient.objects.filter(run__campaign=campaign).exists()
    assert run_of(campaign).total == 0


def test_a_draft_or_paused_triggered_campaign_is_not_fired():
    campaign = triggered()
    services.campaign_pause(campaign)
    assert not post(contact(), order_id="A-1").matched_campaigns.exists()
    services.campaign_resume(campaign)
    assert post(contact(), order_id="A-2").matched_campaigns.exists()


@pytest.mark.parametrize(
    ("conditions", "properties", "matches"),
    [
        ([{"property": "total", "op": "gte", "value": 50}], {"order_id": "1", "total": 50}, True),
        ([{"property": "total", "op": "gte", "value": 50}], {"order_id": "1", "total": 49.5}, False),
        ([{"property": "total", "op": "gte", "value": 50}], {"order_id": "1", "total": "60"}, False),
        ([{"property": "total", "op": "gte", "value": 50}], {"order_id": "1"}, False),
        ([{"property": "shipping.country", "op": "in", "value": ["KE", "UG"]}], {"shipping": {"country": "KE"}}, True),
        ([{"property": "express", "op": "eq", "value": True}], {"express": 1}, False),
        ([{"property": "coupon", "op": "not_exists"}], {"order_id": "1"}, True),
        ([{"property": "coupon", "op": "neq", "value": "X"}], {}, True),
        ([{"property": "skus", "op": "contains", "value": "B-2"}], {"skus": ["A-1", "B-2"]}, True),
        ([{"property": "note", "op": "icontains", "value": "gift"}], {"note": "A GIFT for you"}, True),
        (
            [{"property": "total", "op": "gt", "value": 10}, {"property": "channel", "op": "eq", "value": "web"}],
            {"total": 20, "channel": "app"},
            False,
        ),
    ],
)
def test_property_conditions_decide_the_match(conditions, properties, matches):
    campaign = triggered(body="Order shipped", trigger_conditions=conditions)
    event = post(contact(), **properties)
    assert event.matched_campaigns.filter(pk=campaign.pk).exists() is matches
    assert Recipient.objects.filter(event=event).count() == (1 if matches else 0)


def test_contact_rule_in_the_segment_language_decides_the_match():
    audience.topic_get_or_create("vip")
    campaign = triggered(trigger_contact_rule='city = "Nairobi" AND NOT topic = "vip"')
    nairobi, lagos = contact(delivery.PHONES[0]), contact(delivery.PHONES[1])
    audience.contact_update(nairobi, data={"attributes": {"city": "Nairobi"}})
    audience.contact_update(lagos, data={"attributes": {"city": "Lagos"}})
    assert post(nairobi, order_id="1").matched_campaigns.get() == campaign
    assert not post(lagos, order_id="2").matched_campaigns.exists()
    campaign.refresh_from_db()
    assert campaign.trigger_contact_rule["all"][0]["field"] == "attributes.city"  # stored as the tree


def test_the_campaign_segment_and_topic_still_apply():
    topic = audience.topic_get_or_create("orders")
    campaign = triggered(topic=topic)
    subscribed = contact(delivery.PHONES[1])
    audience.contact_set_topics(subscribed, [topic])
    assert not post(contact(delivery.PHONES[0]), order_id="1").matched_campaigns.exists()
    assert post(subscribed, order_id="2").matched_campaigns.get() == campaign


def test_two_campaigns_on_one_event_each_get_one_recipient():
    first = triggered(name="First")
    second = triggered(name="Second", body="Thanks for order {{ event.order_id }}")
    event = post(contact(), order_id="A-9")
    assert set(event.matched_campaigns.all()) == {first, second}
    assert sorted(Recipient.objects.filter(event=event).values_list("run__campaign__name", flat=True)) == [
        "First",
        "Second",
    ]


def test_an_opted_out_contact_is_matched_but_skipped_and_counted():
    campaign = triggered()
    audience.consent_change(contact(), to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.API, actor="test")
    event = post(contact(), order_id="A-17")
    recipient = Recipient.objects.get(event=event)
    assert (recipient.state, recipient.reason, recipient.message_id) == ("skipped", "opted_out", None)
    run = run_of(campaign)
    assert (run.total, run.skipped, run.skipped_by_reason) == (1, 1, {"opted_out": 1})
    assert_counts_match_recount(run)


def test_a_missing_event_property_skips_with_the_variable_named():
    campaign = triggered()
    event = post(contact(), other="x")
    recipient = Recipient.objects.get(event=event)
    assert (recipient.state, recipient.reason) == ("skipped", "missing_variable")
    assert recipient.detail == "missing variable event.order_id"
    assert_counts_match_recount(run_of(campaign))


def test_the_frequency_cap_counts_earlier_events():
    campaign = triggered(frequency_cap=2, frequency_window=timedelta(days=1))
    states = [Recipient.objects.get(event=post(contact(), order_id=str(n))).state for n in range(3)]
    assert states == ["pending", "pending", "skipped"]
    run = run_of(campaign)
    assert run.skipped_by_reason == {"capped": 1}
    assert_counts_match_recount(run)


def test_quiet_hours_hold_until_the_contact_morning():
    now = timezone.now()
    local = now.astimezone(dt.UTC)
    start = (local - timedelta(hours=1)).time().replace(microsecond=0)
    end = (local + timedelta(hours=2)).time().replace(second=0, microsecond=0)
    campaign = triggered(quiet_start=start, quiet_end=end)
    audience.contact_update(contact(), data={"timezone": "UTC"})
    recipient = Recipient.objects.get(event=post(contact(), order_id="A-1"))
    assert recipient.state == "held" and recipient.release_at > now
    assert recipient.message.render_context == {"order_id": "A-1"}  # ready when released
    assert_counts_match_recount(run_of(campaign))


def test_validity_counts_from_when_the_event_happened():
    campaign = triggered(validity=timedelta(hours=1))
    stale, _ = events.event_record(
        contact=contact(),
        name="order_shipped",
        properties={"order_id": "old"},
        occurred_at=timezone.now() - timedelta(hours=2),
        idempotency_key="stale",
    )
    fresh = post(contact(), order_id="new")
    assert Recipient.objects.get(event=stale).reason == "expired"
    assert Recipient.objects.get(event=fresh).state == "pending"
    assert_counts_match_recount(run_of(campaign))


def test_the_long_lived_run_is_not_expired_by_the_campaign_validity(fake):
    campaign = triggered(validity=timedelta(minutes=5))
    CampaignRun.objects.filter(campaign=campaign).update(started_at=timezone.now() - timedelta(days=2))
    post(contact(), order_id="A-5")
    drain(run_of(campaign))
    assert fake.requests_to(PHONE) == 1


def _age(event: Event, by: timedelta) -> None:
    """As if ``by`` had passed since the event happened and its answer was queued."""
    Event.objects.filter(pk=event.pk).update(occurred_at=event.occurred_at - by)
    Recipient.objects.filter(event=event).update(created_at=timezone.now() - by)


def test_answers_that_outlive_the_validity_during_a_pause_are_skipped_not_sent_on_resume(fake):
    campaign = triggered(validity=timedelta(minutes=5))
    stale, fresh = post(contact(), order_id="A-1"), post(contact(delivery.PHONES[1]), order_id="A-2")
    services.campaign_pause(campaign)
    _age(stale, timedelta(minutes=6))  # a long pause for this one; the other is still in time
    services.campaign_resume(campaign)
    drain(run_of(campaign))
    recipient = Recipient.objects.get(event=stale)
    assert (recipient.state, recipient.reason) == ("skipped", "expired")
    assert (recipient.message.status, recipient.message.skip_reason) == ("skipped", "validity period expired")
    assert fake.requests_to(PHONE) == 0
    assert Recipient.objects.get(event=fresh).state == "sent" and fake.requests_to(delivery.PHONES[1]) == 1
    assert run_of(campaign).skipped_by_reason == {"expired": 1}
    assert_counts_match_recount(run_of(campaign))


def test_the_upkeep_expires_a_paused_triggered_runs_stale_answers_and_nothing_else():
    campaign = triggered(validity=timedelta(hours=1))
    stale, kept = post(contact(), order_id="A-1"), post(contact(), order_id="A-2")
    services.campaign_pause(campaign)
    _age(stale, timedelta(minutes=61))
    _age(kept, timedelta(minutes=59))
    assert upkeep.held_release() == 1
    assert Recipient.objects.get(event=stale).reason == "expired"
    assert Recipient.objects.get(event=kept).state == "pending"
    assert upkeep.held_release() == 0  # safe to run again
    assert_counts_match_recount(run_of(campaign))


def test_cancelling_the_campaign_skips_waiting_answers_and_closes_the_run():
    campaign = triggered()
    event = post(contact(), order_id="A-1")
    services.campaign_cancel(campaign)
    run = run_of(campaign)
    assert run.status == "cancelled"
    assert Recipient.objects.get(event=event).reason == "cancelled"
    assert not post(contact(), order_id="A-2").matched_campaigns.exists()
    assert Message.objects.filter(status="sending").count() == 0


# --- Validation of the trigger (every door: services, API, admin) ----------------------------


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"trigger_event": ""}, "trigger_event", "an event name or a keyword"),
        ({"trigger_event": "bad name!"}, "trigger_event", "letters, digits"),
        ({"trigger_event": "", "trigger_keyword": "stop"}, "trigger_keyword", "consent or help keyword"),
        ({"trigger_event": "", "trigger_keyword": "two words"}, "trigger_keyword", "one word"),
        ({"trigger_conditions": [{"property": "total", "op": "bigger", "value": 1}]}, "trigger_conditions", "[0].op"),
        ({"trigger_conditions": [{"property": "total", "op": "gt", "value": "x"}]}, "trigger_conditions", "number"),
        ({"trigger_conditions": {"property": "total"}}, "trigger_conditions", "a list of conditions"),
        ({"trigger_conditions": [{"property": "a", "op": "in", "value": []}]}, "trigger_conditions", "[0].value"),
        ({"trigger_contact_rule": "age >>= 3"}, "trigger_contact_rule", "column"),
        ({"trigger_contact_rule": {"field": "nope", "op": "eq", "value": 1}}, "trigger_contact_rule", "nope"),
        ({"trigger_contact_rule": 'topic = "no-such-topic"'}, "trigger_contact_rule", "no topic named"),
        ({"schedule_type": "cron", "cron": "0 9 * * *"}, "schedule_type", "starts once"),
    ],
)
def test_trigger_fields_are_validated_on_save_naming_the_field(fields, field, text):
    template, sender = (
        MessageTemplate.objects.create(name="t", channel="sms", body="Hi"),
        campaign_with_audience().sender,
    )
    values = {"trigger_event": "order_shipped", **fields}
    with pytest.raises(services.CampaignError) as caught:
        services.campaign_create(name="Bad", kind="triggered", template=template, sender=sender, **values)
    assert field in caught.value.message_dict
    assert text in " ".join(caught.value.message_dict[field])


def test_a_keyword_answers_one_live_campaign_only():
    triggered(name="Welcome", trigger_event="", trigger_keyword="join")
    campaign = Campaign.objects.get(name="Welcome")
    assert campaign.trigger_keyword == "JOIN"  # stored in upper case
    with pytest.raises(services.CampaignError) as caught:
        services.campaign_create(
            name="Welcome 2",
            kind="triggered",
            template=campaign.template,
            sender=campaign.sender,
            trigger_keyword="Join",
        )
    assert "already answers JOIN" in caught.value.message_dict["trigger_keyword"][0]


def test_a_one_off_campaign_cannot_carry_a_trigger():
    base = campaign_with_audience()
    with pytest.raises(services.CampaignError) as caught:
        services.campaign_update(base, trigger_event="order_shipped")
    assert "only a triggered campaign" in caught.value.message_dict["trigger_event"][0]
