"""A batch held up past the reaper's patience puts back only its own claims, never another batch's."""

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns import services
from campaigns.services import dispatch
from messaging.models import Message
from messaging.services import send_batch
from tests import delivery
from tests.delivery import campaign_with_audience

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db

PHONE = delivery.PHONES[0]


def test_a_stalled_batch_does_not_put_back_a_claim_another_batch_took_since(fake):
    run = services.campaign_launch(campaign_with_audience(phones=[PHONE]))
    [(_, message_id)] = dispatch.recipients_claim(run, 1)
    retaken_at = timezone.now() + timedelta(minutes=2)

    def stalled(idle=None):
        # Batch A waited past the reaper's patience before its first send: the reaper found nothing at
        # the provider and put the message back, and batch B claimed it; B's request is in flight.
        Message.objects.filter(pk=message_id).update(status="sending", claimed_at=retaken_at, attempts=1)
        return False  # A stops here, sending nothing

    batch = send_batch.messages_send_batch([message_id], pace=stalled)
    assert batch.unsent == [message_id]
    message = Message.objects.get(pk=message_id)
    # Still B's: put back to pending, it would be sent a second time by a third batch.
    assert (message.status, message.claimed_at, message.attempts) == ("sending", retaken_at, 1)
    assert fake.requests_to(PHONE) == 0
