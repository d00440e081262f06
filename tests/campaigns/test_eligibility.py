"""The eligibility rule: one SQL rule decides a launch's recipients and a triggered campaign's answers."""

import datetime as dt
import uuid

import pytest

from audience import services as audience
from campaigns import services
from campaigns.models import Campaign, Recipient
from campaigns.services import eligibility, events
from messaging.models import Sender
from tests.factories import MessageTemplateFactory, RecipientFactory, SenderFactory, VariantFactory

pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def triggered(name="Shipped", body="Order {{ event.order_id }} shipped", **fields) -> Campaign:
    campaign = services.campaign_create(
        name=name,
        kind="triggered",
        template=MessageTemplateFactory(body=body),
        sender=SenderFactory(),
        trigger_event="order_shipped",
        **fields,
    )
    services.campaign_launch(campaign)
    return campaign


def answer(contact, **properties) -> Recipient:
    """The recipients of one event, matched by the workers' batch matcher."""
    item = events.EventIn(0, uuid.uuid4().hex, "", "order_shipped", properties, None, contact.pk, None, False)
    [outcome] = events.events_store([item])
    events.events_match()
    return Recipient.objects.filter(event_id=outcome.event_id).order_by("run__campaign_id")


def test_an_answer_skipped_by_one_campaigns_cap_does_not_count_against_the_next():
    person = audience.contact_create(phone="+254713000001", name="A", actor="test")
    RecipientFactory(contact=person)  # one message planned within the hour
    hour = dt.timedelta(hours=1)
    triggered("First", frequency_cap=1, frequency_window=hour)
    triggered("Second", frequency_cap=2, frequency_window=hour)
    decided = [(r.run.campaign.name, r.state, r.reason) for r in answer(person, order_id="A-1")]
    # First is at its cap; its skipped answer leaves Second at 1 of 2.
    assert decided == [("First", "skipped", "capped"), ("Second", "pending", "")]


def test_an_answer_whose_sender_cannot_send_fails_with_the_reason():
    person = audience.contact_create(phone="+254713000001", name="A", actor="test")
    campaign = triggered()
    Sender.objects.filter(pk=campaign.sender_id).update(is_active=False)
    [recipient] = answer(person, order_id="A-1")
    assert (recipient.state, recipient.reason, recipient.detail) == ("failed", "sender", "the sender is not active")
    assert recipient.message_id is None


def test_every_missing_variable_is_named_at_a_launch_and_in_an_answer():
    person = audience.contact_create(phone="+254713000001", name="", actor="test")
    audience.contact_create(phone="+254713000002", name="B", attributes={"city": "Lagos"}, actor="test")
    body = "Hi {{ name }} in {{ attributes.city }}, order {{ event.order_id }}"
    template = MessageTemplateFactory(body=body)
    one_off = services.campaign_create(name="Launch", template=template, sender=SenderFactory())
    launched = Recipient.objects.get(run=services.campaign_launch(one_off, now=NOW), contact=person)
    assert (launched.reason, launched.detail) == ("missing_variable", "missing variable name, attributes.city")
    triggered(body=body)
    [answered] = answer(person, other="x")
    assert answered.detail == "missing variable name, attributes.city, event.order_id"


def test_an_answer_needs_the_variables_of_every_arms_template():
    person = audience.contact_create(phone="+254713000001", name="A", actor="test")
    campaign = triggered(body="Order shipped")
    VariantFactory(campaign=campaign, label="A", template=MessageTemplateFactory(body="A {{ name }}"))
    VariantFactory(campaign=campaign, label="B", template=MessageTemplateFactory(body="B {{ attributes.city }}"))
    [recipient] = answer(person)
    assert (recipient.state, recipient.detail) == ("skipped", "missing variable attributes.city")


def test_named_parameters_adopt_positional_fragments_and_keep_literal_percents():
    params = eligibility.Params()
    sql = params.adopt("a = %s AND b LIKE '50%%' AND c = %s", [1, 2], "x")
    assert (sql, params) == ("a = %(x)s AND b LIKE '50%%' AND c = %(x_2)s", {"x": 1, "x_2": 2})
    assert params.add("x", 1) == "%(x)s"  # the same value under the same name is one parameter
    assert eligibility.Statement(sql, params).positional() == ("a = %s AND b LIKE '50%%' AND c = %s", [1, 2])
