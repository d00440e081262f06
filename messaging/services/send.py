"""Sending one message exactly once: claim, check, render, call the provider, record.

Every send goes through ``message_send(message_id)``, whoever asks (the API, campaigns,
retries, tasks). The database decides what happens, never the fact that a task ran:

- A conditional UPDATE (pending -> sending) claims the message; a second call finds it
  claimed and does nothing.
- Consent, the WhatsApp 24 h window and rendering are checked before the provider is
  called; a refusal is recorded as ``skipped`` with the reason.
- Retryable errors put the message back to ``pending`` with ``next_attempt_at`` (exponential
  backoff with jitter, capped); the task is re-enqueued and a beat task catches lost ones.
- A message left in ``sending`` without a sid (a crash after the provider accepted it, or a
  timeout whose outcome is unknown) is never resent blindly: ``message_reconcile`` asks the
  provider for a message matching it and adopts its sid, and only if the provider has none
  puts it back to ``pending`` (``messaging.services.reconcile``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from audience.models import Channel, ConsentStatus, Contact
from messaging.links.rewrite import body_track, links_save
from messaging.models import Direction, Message, MessageStatus, ProviderCallback, Sender
from messaging.providers import (
    ProviderError,
    SendRequest,
    SendResult,
    get_provider,
    provider_name_for,
    status_callback_url,
)
from messaging.services.send_outcomes import answer_verdict, error_effects, error_verdict
from messaging.services.status import STAMP_COLUMNS, status_callbacks_apply_pending
from messaging.services.templates import body_segments, template_render, text_template

logger = logging.getLogger(__name__)

# WhatsApp takes free-form messages only this long after the person last wrote to the business.
WHATSAPP_WINDOW = timedelta(hours=24)

# The statuses a send's outcome is written over: in flight, or unknown after a failed lookup.
OUTCOME_AWAITED = (MessageStatus.SENDING, MessageStatus.UNKNOWN)

SKIP_OPTED_OUT = "contact opted out"
SKIP_OUTSIDE_WINDOW = "outside WhatsApp 24h window"
SKIP_NO_CONTACT = "contact deleted"
SKIP_NO_SENDER = "no active sender for the channel"
SKIP_EMPTY = "nothing to send: no body and no template"
ERASED_BEFORE_CONFIRMED = "contact erased before the send was confirmed"


def message_enqueue(message_id: int, sender_id: int | None, countdown: float = 0) -> None:
    """Hand the send to a worker once the current transaction commits: into its sender's paced queue
    (``send_queue``) now, or, for a retry, ``countdown`` seconds from now."""
    # Both import these services: a cycle at module level.
    from messaging import tasks
    from messaging.services import send_queue

    if countdown:
        transaction.on_commit(
            lambda: tasks.message_queue.apply_async(args=[message_id, sender_id], countdown=countdown)
        )
    else:
        transaction.on_commit(lambda: send_queue.send_queue_push(message_id, sender_id))


# --- Sending -------------------------------------------------------------------------------


def message_send(message_id: int) -> Message:
    """Send a pending message once; any other state is left alone and returned as it is."""
    now = timezone.now()
    # One commit for claim + checks + rendering: a crash before it leaves the message pending, untouched.
    with transaction.atomic():
        if not _claim(message_id, now):
            return Message.objects.get(pk=message_id)
        message = Message.objects.select_related("contact", "sender", "template").get(pk=message_id)
        reason = send_refusal(message, now) or _render(message)
        if reason:
            return message_finish(message, MessageStatus.SKIPPED, skip_reason=reason)
    provider = get_provider(provider_name_for(sender_of(message).provider))
    try:
        result = provider.send(send_request_for(message))
    except ProviderError as exc:
        return _provider_refused(message, exc)
    return message_accepted(message, result)


def claimable(now: datetime) -> Q:
    """Outbound messages a send may claim now: pending, and due (a retry's time has come, 1 s early at most)."""
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + timedelta(seconds=1))
    return due & Q(status=MessageStatus.PENDING, direction=Direction.OUTBOUND)


def _claim(message_id: int, now: datetime) -> bool:
    return bool(
        Message.objects.filter(claimable(now), pk=message_id).update(
            status=MessageStatus.SENDING,
            claimed_at=now,
            sending_at=now,
            attempts=F("attempts") + 1,
            next_attempt_at=None,
            updated_at=now,
        )
    )


def send_refusal(message: Message, now: datetime) -> str:
    """Why the message may not go out now (a skip reason), or "" when it may."""
    contact = message.contact
    if contact is None:
        return SKIP_NO_CONTACT
    if contact.consent_status != ConsentStatus.OPTED_IN:
        return SKIP_OPTED_OUT
    if message.sender is None or not message.sender.is_active:
        return SKIP_NO_SENDER
    if not message.template and not message.body.strip():
        return SKIP_EMPTY
    free_form = not (message.template and message.template.content_sid)
    if message.channel == Channel.WHATSAPP and free_form and not in_whatsapp_window(contact, now):
        return SKIP_OUTSIDE_WINDOW
    return ""


def in_whatsapp_window(contact: Contact, now: datetime | None = None) -> bool:
    """Free-form WhatsApp text is allowed within 24 h of the contact's last inbound message."""
    last = contact.last_inbound_at
    return last is not None and last > (now or timezone.now()) - WHATSAPP_WINDOW


def sender_of(message: Message) -> Sender:
    """An outbound message's sender: every one is created with one (``send_refusal`` skips a message without)."""
    if message.sender is None:
        raise ValueError(f"message {message.pk} has no sender")
    return message.sender


def contact_of(message: Message) -> Contact:
    """The contact of a message past ``send_refusal`` (which skips a message whose contact is gone)."""
    if message.contact is None:
        raise ValueError(f"message {message.pk} has no contact")
    return message.contact


RENDERED_FIELDS = ("body", "content_sid", "content_variables", "segments", "encoding", "to_address", "from_address")


def _render(message: Message) -> str:
    """Fill body / content variables, segments and encoding on the row; returns a skip reason."""
    reason = render_fill(message)
    if reason:
        return reason
    links_save([message])  # the short links answer before the message leaves
    # Saved before the provider is called: reconciliation matches on what was actually sent.
    Message.objects.filter(pk=message.pk, status=MessageStatus.SENDING).update(
        **{name: getattr(message, name) for name in RENDERED_FIELDS}
    )
    return ""


def render_fill(message: Message) -> str:
    """Render ``message`` in memory (no query): body or content variables, segments, addresses.

    A free-text body renders exactly like a template (``text_template``), from the text as written.
    """
    template = message.template or text_template(message.channel, message.body_source or message.body)
    result = template_render(template, contact=message.contact, context=message.render_context)
    if not result.ok:
        return result.skip_reason
    message.body = (
        result.text if message.template and message.template.content_sid else body_track(message, result.text)
    )
    if message.template:
        message.content_sid = message.template.content_sid
        message.content_variables = result.content_variables
    segments = body_segments(message.channel, message.body) if not message.content_sid else None
    message.segments = segments.segments if segments else 1
    message.encoding = segments.encoding if segments else ""
    message.to_address = contact_of(message).phone
    message.from_address = sender_of(message).from_address
    return ""


def send_request_for(message: Message) -> SendRequest:
    sender = sender_of(message)
    return SendRequest(
        to=message.to_address or contact_of(message).phone,
        channel=message.channel,
        from_=sender.from_address,
        messaging_service_sid=sender.messaging_service_sid,
        body="" if message.content_sid else message.body,
        content_sid=message.content_sid,
        content_variables=dict(message.content_variables or {}),
        status_callback=status_callback_url(),
        reference=f"message-{message.pk}",
    )


def message_finish(message: Message, status: str, *, claim: datetime | None = None, **fields: Any) -> Message:
    """Leave `sending` (or `unknown`) for ``status`` (conditional: nothing happens if someone else moved it).

    ``claim``: only if the message still holds this claim (a reconciler's, which a new send replaces).
    """
    now = timezone.now()
    # An answer naming a later status (sent) is evidence for the ones it implies too; sending_at
    # stays the claim's (when the request left).
    implied = {MessageStatus.SKIPPED: ("skipped_at",), **STAMP_COLUMNS}.get(MessageStatus(status), ())
    stamps = [c for c in implied if c != "sending_at"]
    values = {"status": status, "updated_at": now, **dict.fromkeys(stamps, now), **fields}
    with transaction.atomic():  # a savepoint: a unique-sid clash must not break the caller's transaction
        held = Message.objects.filter(pk=message.pk, status__in=OUTCOME_AWAITED)
        moved = (held.filter(claimed_at=claim) if claim else held).update(**values)
    if moved:
        for name, value in values.items():
            setattr(message, name, value)
    else:
        message.refresh_from_db()
    return message


def message_accepted(message: Message, result: SendResult, *, claim: datetime | None = None) -> Message:
    """Record the provider's sid and status, then apply any callback that arrived first."""
    verdict = answer_verdict(result)
    status = verdict.status
    fields: dict[str, Any] = {"provider_sid": result.provider_sid, "next_attempt_at": None, **verdict.fields}
    if result.segments:
        fields["segments"] = result.segments
    if result.price is not None:
        fields["price"], fields["price_unit"] = result.price, result.price_unit
    try:
        message = message_finish(message, status, claim=claim, **fields)
    except IntegrityError:  # the sid is already on another row: never bind one provider message twice
        logger.error("provider sid %s already recorded; message %s needs review", result.provider_sid, message.pk)
        return message_finish(
            message, MessageStatus.FAILED, claim=claim, error_code="duplicate", error_message="provider sid reused"
        )
    # Most sends have no early callback: one indexed EXISTS instead of the locking apply path.
    if ProviderCallback.objects.filter(provider_sid=result.provider_sid, applied_at__isnull=True).exists():
        status_callbacks_apply_pending(message)
    return message


def _provider_refused(message: Message, exc: ProviderError) -> Message:
    verdict = error_verdict(message, exc)
    error_effects(message, exc, verdict)
    if verdict.unknown:
        message.refresh_from_db()
        return message
    if verdict.retry_in is None:
        return message_finish(message, verdict.status, **verdict.fields)
    Message.objects.filter(pk=message.pk, status=MessageStatus.SENDING).update(
        status=verdict.status,
        next_attempt_at=timezone.now() + timedelta(seconds=verdict.retry_in),
        updated_at=timezone.now(),
        **verdict.fields,
    )
    if message.source_type_id is None:  # a message with a source (a campaign) is re-sent, paced, by it
        message_enqueue(message.pk, message.sender_id, countdown=verdict.retry_in)
    message.refresh_from_db()
    return message


# --- Retries (reconciliation: messaging.services.reconcile) ----------------------------------


def messages_send_due(*, limit: int = 500) -> int:
    """Enqueue retries whose time has come (their own task was lost); returns how many."""
    cutoff = timezone.now() - timedelta(seconds=5)
    due = Message.objects.filter(status=MessageStatus.PENDING, direction=Direction.OUTBOUND).filter(
        Q(next_attempt_at__lte=cutoff, source_type__isnull=True)
        | Q(next_attempt_at__isnull=True, source_type__isnull=True, created_at__lt=cutoff - timedelta(minutes=1))
    )
    rows = list(due.order_by("next_attempt_at", "pk").values_list("pk", "sender_id")[:limit])
    for message_id, sender_id in rows:
        message_enqueue(message_id, sender_id)
    return len(rows)
