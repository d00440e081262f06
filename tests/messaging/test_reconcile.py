"""Reconciling stale sends at the edges: an erased contact, a sender whose number changed, a bad row.

Sends go through the real twilio client to the fake Twilio server.
"""

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from audience import services as audience
from audience.models import Contact
from campaigns import services as campaigns
from campaigns.models import Recipient
from campaigns.services import dispatcher, upkeep
from messaging.models import Message, MessageStatus, Sender
from messaging.services import create, reconcile, send, send_outcomes
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience
from tests.factories import ContactFactory

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db

PHONES = delivery.PHONES


def _stale(*messages: Message, age: timedelta = timedelta(seconds=5)) -> None:
    past = timezone.now() - send_outcomes.STALE_SENDING_AFTER - age
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(claimed_at=past, sending_at=past)


def _timed_out_send(fake, phone: str, sender: Sender) -> Message:
    """A message whose send timed out at the fake: created at Twilio, left in `sending` without a sid."""
    fake.fail(phone, "timeout")
    message, _ = create.message_create(contact=ContactFactory(phone=phone), sender=sender, body="Hi", enqueue=False)
    message = send.message_send(message.pk)
    assert message.status == MessageStatus.SENDING and message.provider_sid is None
    return message


def test_a_stale_send_whose_contact_was_erased_fails_and_its_run_completes(fake):
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:1]))
    fake.fail(PHONES[0], "timeout")
    assert dispatcher.run_dispatch_batch(run.pk) == (1, 0.0)
    recipient = Recipient.objects.select_related("message").get(run=run)
    assert recipient.state == "sending" and recipient.message.status == MessageStatus.SENDING
    audience.contact_erase(Contact.objects.get(phone=PHONES[0]))
    message = Message.objects.get(pk=recipient.message_id)
    assert (message.contact_id, message.to_address) == (None, "")  # what erasure leaves
    _stale(message)

    assert reconcile.messages_reconcile_stale() == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED and message.failed_at is not None
    assert message.error_message == "contact erased before the send was confirmed"
    assert upkeep.recipients_reap(now=timezone.now() + timedelta(minutes=5)) == 1
    recipient.refresh_from_db()
    assert (recipient.state, recipient.reason) == ("failed", "unknown")
    assert_counts_match_recount(run)
    assert upkeep.runs_complete() == 1
    assert fake.requests_to(PHONES[0]) == 1  # never sent again


def test_one_message_that_cannot_be_reconciled_does_not_stop_the_others(fake, caplog):
    sender = Sender.objects.create(name="sms", channel="sms", kind="long_code", from_address="+15005550006")
    broken = _timed_out_send(fake, PHONES[0], sender)
    healthy = _timed_out_send(fake, PHONES[1], sender)
    # A provider no longer configured (renamed in a deploy): the lookup raises for this message only.
    legacy = Sender.objects.create(
        name="legacy", channel="sms", kind="long_code", provider="legacy", from_address="+15005550008"
    )
    Message.objects.filter(pk=broken.pk).update(sender=legacy)
    _stale(broken, age=timedelta(seconds=30))  # the older claim: reconciled first
    _stale(healthy)

    with caplog.at_level(logging.ERROR, logger="messaging.services.send"):
        assert reconcile.messages_reconcile_stale() == 2
    healthy.refresh_from_db()
    assert healthy.status == MessageStatus.QUEUED and healthy.provider_sid
    assert Message.objects.get(pk=broken.pk).status == MessageStatus.SENDING  # left for a later run
    [record] = [r for r in caplog.records if r.exc_info]
    assert f"message {broken.pk}" in record.getMessage()
    assert fake.requests_to(PHONES[1]) == 1


def test_a_stale_send_is_found_from_the_number_it_went_out_from_after_the_sender_changed(fake):
    sender = Sender.objects.create(name="sms", channel="sms", kind="long_code", from_address="+15005550006")
    message = _timed_out_send(fake, PHONES[2], sender)
    [created] = fake.messages()
    assert created["from"] == "+15005550006"
    sender.from_address = "+15005550009"  # the number was replaced before the reaper ran
    sender.save()
    _stale(message)

    message = reconcile.message_reconcile(message.pk)
    assert message.status == MessageStatus.QUEUED and message.provider_sid == created["sid"]
    assert fake.requests_to(PHONES[2]) == 1
