"""What the provider's answer to a send means for the message: one rule for single and batch sends.

``message_send`` (one message) and the batch pipeline (``send_batch``) both ask this module what an
answer or an error means, then write it their own way (a conditional UPDATE, or rows in bulk).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audience.models import ConsentSource, ConsentStatus
from audience.services import consent_change
from config import observe
from messaging.models import Message, MessageStatus
from messaging.providers import THROTTLE_CODES, ErrorKind, ProviderError, SendResult, status_for

MAX_ATTEMPTS = 5
BACKOFF_BASE = 2.0  # seconds before the first retry; doubles each attempt
BACKOFF_CAP = 300.0
# A message in `sending` this long without a sid lost its worker or its answer: reconcile it.
# Well above the provider's connect + read timeouts, so a live send is never taken for dead.
STALE_SENDING_AFTER = timedelta(seconds=60)

FAILED_ANSWERS = (MessageStatus.FAILED, MessageStatus.UNDELIVERED)


@dataclass(frozen=True)
class Verdict:
    """The message's next status and the columns written with it."""

    status: str
    fields: dict[str, Any] = field(default_factory=dict)
    retry_in: float | None = None  # seconds until the next attempt (status pending)
    unknown: bool = False  # the provider may hold the message: it stays `sending`, reconciled later
    opted_out: bool = False  # the provider says the person opted out: recorded as consent


def answer_verdict(result: SendResult) -> Verdict:
    """The provider accepted the request: its status in the platform's words (queued when it names none)."""
    try:
        status = status_for(result.status)
    except ValueError:
        status = MessageStatus.QUEUED
    error_message = f"the provider answered {result.status}" if status in FAILED_ANSWERS else ""
    return Verdict(str(status), {"error_code": "", "error_message": error_message})


def error_verdict(message: Message, exc: ProviderError) -> Verdict:
    """The provider refused, or its answer never came: retry, give up, or find out later."""
    if exc.accepted_unknown:
        return Verdict(str(MessageStatus.SENDING), unknown=True)
    if exc.kind == ErrorKind.RETRYABLE and message.attempts < MAX_ATTEMPTS:
        fields = {"error_code": exc.code, "error_message": retry_text(message, exc)}
        return Verdict(str(MessageStatus.PENDING), fields, retry_in=retry_delay(message.attempts))
    text = give_up_text(message, exc) if exc.kind == ErrorKind.RETRYABLE else exc.message[:500]
    fields = {"error_code": exc.code, "error_message": text}
    return Verdict(str(MessageStatus.FAILED), fields, opted_out=exc.kind == ErrorKind.OPTED_OUT)


def error_effects(message: Message, exc: ProviderError, verdict: Verdict) -> None:
    """What every refused send does besides writing its row: count it, and act on what it says."""
    observe.provider_error_count(message.sender_id, exc.throttled or exc.code in THROTTLE_CODES)
    if verdict.unknown:
        outcome_unknown_record(message, exc)
    if verdict.opted_out:
        provider_opt_out(message, exc)


def provider_opt_out(message: Message, exc: ProviderError) -> None:
    """The provider says the recipient opted out: record it through the consent service."""
    if message.contact is None or message.sender is None:  # erased since the send: nobody to record it for
        return
    consent_change(
        message.contact,
        to_status=ConsentStatus.OPTED_OUT,
        source=ConsentSource.PROVIDER,
        actor=message.sender.provider,
        evidence={"error_code": exc.code, "error_message": exc.message, "message_id": message.pk},
    )


def outcome_unknown_record(message: Message, exc: ProviderError) -> None:
    """The provider may have created the message: it stays in `sending` and is reconciled later."""
    from messaging.tasks import message_reconcile  # tasks import the services: a cycle at module level

    Message.objects.filter(pk=message.pk, status=MessageStatus.SENDING).update(
        error_code=exc.code,
        error_message=f"outcome unknown, reconciling with the provider: {exc.message}"[:500],
        updated_at=timezone.now(),
    )
    countdown = STALE_SENDING_AFTER.total_seconds() + 5
    transaction.on_commit(lambda: message_reconcile.apply_async(args=[message.pk], countdown=countdown))


def retry_text(message: Message, exc: ProviderError) -> str:
    return f"attempt {message.attempts} failed, retrying: {exc.message}"[:500]


def give_up_text(message: Message, exc: ProviderError) -> str:
    return f"gave up after {message.attempts} attempts: {exc.message}"[:500]


def retry_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter in its upper half, capped."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(ceiling / 2, ceiling)
