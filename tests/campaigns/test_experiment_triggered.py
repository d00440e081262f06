"""A triggered campaign's experiment: each event's recipient gets the snapshot's arm for its contact."""

import uuid

import pytest

from audience.models import Contact
from campaigns import services
from campaigns.models import CampaignRun, Recipient, SkipReason
from campaigns.services import arms, events
from tests.factories import ContactFactory, MessageTemplateFactory, SenderFactory, VariantFactory

pytestmark = pytest.mark.django_db


def test_event_answers_carry_the_contacts_arm_and_the_control_group_is_skipped_as_control():
    people = Contact.objects.bulk_create(ContactFactory.build_batch(60))
    campaign = services.campaign_create(
        name="Shipped",
        kind="triggered",
        template=MessageTemplateFactory(),
        sender=SenderFactory(),
        trigger_event="order_shipped",
        control_share=30,
    )
    a = VariantFactory(campaign=campaign, label="A", template=MessageTemplateFactory(body="A {{ name }}"))
    b = VariantFactory(campaign=campaign, label="B", template=MessageTemplateFactory(body="B {{ name }}"))
    services.campaign_launch(campaign)
    for person in people:
        events.event_record(contact=person, name="order_shipped", properties={}, idempotency_key=uuid.uuid4().hex)
    run = CampaignRun.objects.get(campaign=campaign)
    expected = arms.arms_for_contacts(campaign, [p.pk for p in people])
    rows = list(Recipient.objects.filter(run=run).values_list("contact_id", "arm", "state", "reason", "message_id"))
    assert {contact_id: arm for contact_id, arm, *_ in rows} == expected
    control = [row for row in rows if row[1] == arms.CONTROL_ARM]
    assert control and all(row[2:] == ("skipped", SkipReason.CONTROL, None) for row in control)
    templates = dict(
        Recipient.objects.filter(run=run, arm__in=[a.pk, b.pk]).values_list("arm", "message__template_id").distinct()
    )
    assert templates == {a.pk: a.template_id, b.pk: b.template_id}
    run.refresh_from_db()
    assert run.skipped_by_reason == {"control": len(control)}
    assert run.arm_sizes == {
        str(arm): sum(1 for row in rows if row[1] == arm) for arm in (arms.CONTROL_ARM, a.pk, b.pk)
    }
