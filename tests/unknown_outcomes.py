"""Shared by the outcome-unknown tests: runs left as a dead worker leaves them, a provider whose lookup fails."""

from datetime import timedelta

from django.utils import timezone

from campaigns import services as campaigns
from campaigns.models import CampaignRun, Recipient
from campaigns.services import dispatch, upkeep
from messaging.models import Message, MessageStatus
from messaging.services import reconcile, send
from tests.delivery import campaign_with_audience, drain

PHONES = [f"+2547140000{n:02d}" for n in range(1, 9)]


def worker_died(run: CampaignRun, count: int, phones: list[str] | None = None) -> list[Message]:
    """Claim ``count`` recipients (those of ``phones``, else the first phones) and their messages as a
    dispatcher does, then die before calling the provider."""
    pending = Recipient.objects.filter(run=run, state="pending")
    if phones is None:
        phones = list(pending.order_by("contact__phone").values_list("contact__phone", flat=True)[:count])
    # The claim takes recipients in id order, which the snapshot's plan decides: set the others aside.
    aside = list(pending.exclude(contact__phone__in=phones).values_list("pk", flat=True))
    Recipient.objects.filter(pk__in=aside).update(state="held")
    claims = dispatch.recipients_claim(run, count)
    Recipient.objects.filter(pk__in=aside).update(state="pending")
    messages = Message.objects.filter(pk__in=[message_id for _, message_id in claims]).select_related(
        "contact", "sender", "template"
    )
    for message in messages:
        send.render_fill(message)
        message.status, message.attempts = MessageStatus.SENDING, 1
        message.claimed_at = message.sending_at = timezone.now()
        message.save()
    return list(messages)


def timed_out(fake, run: CampaignRun, phones: list[str]) -> None:
    """The fake creates these recipients' messages but answers after the client gave up: `sending`, no sid."""
    for phone in phones:
        fake.fail(phone, "timeout")
    drain(run)


def age(run: CampaignRun, *, minutes: float = 5, phones: list[str] | None = None) -> None:
    """Send time and claims ``minutes`` ago: the worker that held them is long gone."""
    past = timezone.now() - timedelta(minutes=minutes)
    messages = Message.objects.filter(recipient__run=run, provider_sid__isnull=True)
    recipients = Recipient.objects.filter(run=run, state="sending")
    if phones is not None:
        messages = messages.filter(to_address__in=phones)
        recipients = recipients.filter(contact__phone__in=phones)
    messages.update(claimed_at=past, sending_at=past)
    recipients.update(claimed_at=past)


def lookups_fail(settings, fake) -> None:
    """The provider's list endpoint answers 404 (so does everything under this base URL)."""
    settings.TWILIO_API_BASE_URL = f"{fake.base_url}/down"


def lookups_recover(settings, fake) -> None:
    settings.TWILIO_API_BASE_URL = fake.base_url


def next_beat_run() -> None:
    """A beat run later: unknown outcomes are due for their next lookup."""
    Message.objects.filter(status=MessageStatus.UNKNOWN).update(
        claimed_at=timezone.now() - reconcile.UNKNOWN_LOOKUP_EVERY - timedelta(seconds=1)
    )


def beat_upkeep() -> None:
    """What beat runs: the messaging reconciler, the recipients' reaper, the runs' completion."""
    reconcile.messages_reconcile_stale()
    upkeep.recipients_reap()
    upkeep.runs_complete()


def completed_run_with_unknowns(fake, settings) -> CampaignRun:
    """4 recipients: one claimed by a worker that died before the provider call (never created), one whose
    send timed out (created at the fake), two sent; the lookup fails, the run completes with 2 unknown."""
    run = campaigns.campaign_launch(campaign_with_audience(phones=PHONES[:4]))
    worker_died(run, 1, PHONES[:1])
    timed_out(fake, run, PHONES[1:2])
    age(run)
    lookups_fail(settings, fake)
    beat_upkeep()
    run.refresh_from_db()
    assert (run.status, run.sent, run.unknown) == ("completed", 2, 2)
    return run
