"""Shared by the delivery tests: the fake Twilio fixture, a campaign maker, a drain loop, a recount."""

import socket
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from audience import services as audience
from campaigns.models import Campaign, CampaignRun, Recipient
from campaigns.services import dispatcher
from messaging import pacing
from messaging.models import Message, MessageStatus, MessageTemplate, Sender
from tests.fake_twilio import FakeTwilio

SID = "AC" + "6d" * 16
TOKEN = "delivery-test-token"
PHONES = [f"+2547130000{n:02d}" for n in range(1, 7)]


@pytest.fixture
def fake(settings):
    # Seeded: the tests that inject random errors (error_rate, error_mix) draw the same ones every run.
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="off", timeout_sleep=2.0, seed=20261129) as server:
        settings.MESSAGING_PROVIDER = "twilio"
        settings.TWILIO_ACCOUNT_SID = SID
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.TWILIO_API_BASE_URL = server.base_url
        settings.TWILIO_READ_TIMEOUT = 0.5
        yield server


def campaign_with_audience(phones=PHONES, mps=500, **fields) -> Campaign:
    for phone in phones:
        audience.contact_create(phone=phone, name=f"C{phone[-2:]}")
    sender = Sender.objects.create(
        name=f"sms-{mps}", channel="sms", kind="long_code", provider="twilio", from_address="+15005550006", mps=mps
    )
    pacing.pacing_reset(sender.pk)
    template = MessageTemplate.objects.create(name="hello", channel="sms", body="Hello {{ name }}")
    return Campaign.objects.create(name="Delivery", template=template, sender=sender, **fields)


def drain(run: CampaignRun, *, hurry_retries: bool = False, rounds: int = 100) -> None:
    """Run the dispatcher until it has nothing left, as chained tasks would."""
    for _ in range(rounds):
        _, again = dispatcher.run_dispatch_batch(run.pk)
        if again is None:
            return
        if hurry_retries:
            Message.objects.filter(status=MessageStatus.PENDING, next_attempt_at__isnull=False).update(
                next_attempt_at=timezone.now() - timedelta(seconds=1)
            )
    raise AssertionError("the dispatcher never finished")


def assert_counts_match_recount(run: CampaignRun) -> None:
    run.refresh_from_db()
    by_state = dict(Recipient.objects.filter(run=run).values_list("state").annotate(n=Count("pk")))
    reasons = dict(Recipient.objects.filter(run=run, state="skipped").values_list("reason").annotate(n=Count("pk")))
    counters = {s: getattr(run, s) for s in ("pending", "held", "sending", "sent", "skipped", "failed", "unknown")}
    assert counters == {s: by_state.get(s, 0) for s in counters}
    assert {k: v for k, v in run.skipped_by_reason.items() if v} == reasons
    assert run.total == sum(counters.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
