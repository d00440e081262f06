"""A claim reaped before its Message was linked is not sent by the dispatcher that lost it.

The interleaving is played step by step with explicit times: dispatcher A claims, stalls past
the reaper's patience, the reaper puts the claim back, dispatcher B claims and sends, then A
resumes. Sends go through the real twilio client to the fake Twilio server.
"""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from campaigns import services as campaigns
from campaigns.models import Recipient
from campaigns.services import dispatch, dispatcher, upkeep
from messaging.models import Message
from messaging.services import send_batch
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db

PHONE = delivery.PHONES[0]


def test_a_dispatcher_resuming_after_its_claim_was_reaped_and_retaken_sends_nothing(fake):
    run = campaigns.campaign_launch(campaign_with_audience(phones=[PHONE]))
    claimed_at = timezone.now() - timedelta(minutes=1)
    taken = dispatch._recipients_take(run, 1, claimed_at)  # A claims, then stalls before the link
    assert len(taken) == 1 and taken[0][2] is None

    reaped_at = claimed_at + timedelta(seconds=31)
    assert upkeep.recipients_reap(now=reaped_at) == 1  # no Message: back to pending
    assert dispatcher.run_dispatch_batch(run.pk) == (1, 0.0)  # B claims, links its Message and sends
    assert fake.requests_to(PHONE) == 1

    with transaction.atomic():  # A resumes: its claim is B's now
        linked = dispatch._messages_link(run, taken, claimed_at)
    send_batch.messages_send_batch([message_id for _, message_id in linked])

    assert fake.requests_to(PHONE) == 1  # B's send only
    assert linked == []
    recipient = Recipient.objects.get(run=run)
    assert recipient.state == "sent"
    assert list(Message.objects.values_list("pk", flat=True)) == [recipient.message_id]  # no orphan left pending
    assert_counts_match_recount(run)
    assert dispatcher.run_dispatch_batch(run.pk) == (0, None)
    run.refresh_from_db()
    assert run.status == "completed"


def test_a_claim_still_held_is_linked_and_sent_once(fake):
    run = campaigns.campaign_launch(campaign_with_audience(phones=[PHONE]))
    claimed_at = timezone.now()
    taken = dispatch._recipients_take(run, 1, claimed_at)
    with transaction.atomic():
        [(recipient_id, message_id)] = dispatch._messages_link(run, taken, claimed_at)
    assert Recipient.objects.get(pk=recipient_id).message_id == message_id
    send_batch.messages_send_batch([message_id])
    assert fake.requests_to(PHONE) == 1
