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

import functools
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from audience.models import Channel, ConsentStatus, Contact
from config import idempotency, sql
from messaging import selectors
from messaging.links.rewrite import body_track, links_save
from messaging.models import Direction, Message, MessageStatus, MessageTemplate, ProviderCallback, Sender
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
from messaging.services.templates import body_segments, template_render, template_validate, text_template

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


class MessageRequestError(ValidationError):
    """A message could not be created as asked; message_dict names the field."""


# --- Creating ------------------------------------------------------------------------------


def message_create(
    *,
    contact: Contact,
    template: MessageTemplate | None = None,
    body: str = "",
    sender: Sender | None = None,
    context: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    request_hash: str = "",
    source: Any = None,
    enqueue: bool = True,
    replay_checked: bool = False,
) -> tuple[Message, bool]:
    """Create a pending outbound message and enqueue its send after commit.

    Returns (message, created). With an idempotency key already used, the first message is
    returned and nothing new is sent, if ``request_hash`` (the request's fingerprint, see
    ``config.idempotency``) matches the first request's; otherwise ``IdempotencyConflict``.
    ``replay_checked``: the caller has just called ``message_replay`` for the key (the unique
    key still decides between two requests racing).
    """
    if idempotency_key and not replay_checked:
        existing = message_replay(idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    channel, sender = _channel_and_sender(contact, template, body, sender)
    _render_check(contact, channel, template, body, context)
    message = Message(
        direction=Direction.OUTBOUND,
        contact=contact,
        sender=sender,
        template=template,
        channel=channel,
        to_address=contact.phone,
        from_address=sender.from_address,
        body="" if template else body,
        body_source="" if template else body,
        render_context=dict(context or {}),
        idempotency_key=idempotency_key or None,
        request_hash=request_hash if idempotency_key else "",
        source=source,
    )
    try:
        if connection.in_atomic_block:
            with transaction.atomic():  # a savepoint: a used key leaves the caller's transaction usable
                message.save()
        else:
            message.save()  # one INSERT, committed on its own
    except IntegrityError:
        # The same key sent concurrently: that request created it (a replay of it, or a conflict).
        existing = message_replay(idempotency_key, request_hash) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    if enqueue:
        message_enqueue(message.pk)
    return message, True


def message_replay(idempotency_key: str, request_hash: str) -> Message | None:
    """The message first created with this key, or None; IdempotencyConflict if the request differs."""
    existing = Message.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        idempotency.replay_check(existing.request_hash, request_hash, f"message {existing.pk}")
    return existing


def messages_create_for_sources(
    *,
    template: MessageTemplate,
    sender: Sender,
    source_type: ContentType,
    sources: list[tuple[int, int]],
    contexts: list[Mapping[str, Any]] | None = None,
) -> dict[int, int]:
    """Create one pending message per (source_id, contact_id) in one INSERT; returns {source_id: message_id}.

    The bulk form of ``message_create`` for a template sent to many contacts (campaign
    recipients); nothing is enqueued, the caller sends them. A contact deleted meanwhile gets a
    message without a contact, which the send skips. ``contexts``, one per source, are the
    messages' render contexts (an event's properties for ``{{ event.* }}``).
    """
    channel, sender = sender_for_template(template, sender)
    if not sources:
        return {}
    if contexts is not None:
        return _messages_create_with_contexts(channel, template, sender, source_type, sources, contexts)
    now = timezone.now()
    fixed = {
        "direction": Direction.OUTBOUND.value,
        "sender": sender.pk,
        "template": template.pk,
        "channel": channel,
        "from_address": sender.from_address,
        "source_type": source_type.pk,
        "created_at": now,
        "updated_at": now,
    }
    columns, values, params = _insert_defaults(fixed)
    rows = sql.fetch(
        f"""
        INSERT INTO messaging_message ({", ".join(columns)}, contact_id, to_address, source_id)
        SELECT {", ".join(values)}, c.id, COALESCE(c.phone, ''), s.source_id
        FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS s (source_id, contact_id, n)
        LEFT JOIN audience_contact c ON c.id = s.contact_id
        ORDER BY s.n
        RETURNING source_id, id
        """,
        [*params, [source_id for source_id, _ in sources], [contact_id for _, contact_id in sources]],
    )
    return dict(rows)


def sender_for_template(template: MessageTemplate, sender: Sender | None) -> tuple[str, Sender]:
    """(channel, sender) a template is sent with; MessageRequestError naming the field if it cannot be."""
    return _channel_and_sender(None, template, "", sender)


def _messages_create_with_contexts(
    channel: str,
    template: MessageTemplate,
    sender: Sender,
    source_type: ContentType,
    sources: list[tuple[int, int]],
    contexts: list[Mapping[str, Any]],
) -> dict[int, int]:
    now = timezone.now()
    fixed = {
        "direction": Direction.OUTBOUND.value,
        "sender": sender.pk,
        "template": template.pk,
        "channel": channel,
        "from_address": sender.from_address,
        "source_type": source_type.pk,
        "created_at": now,
        "updated_at": now,
    }
    columns, values, params = _insert_defaults(fixed, per_row=("render_context",))
    rows = sql.fetch(
        f"""
        INSERT INTO messaging_message ({", ".join(columns)}, contact_id, to_address, source_id, render_context)
        SELECT {", ".join(values)}, c.id, COALESCE(c.phone, ''), s.source_id, s.context::jsonb
        FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) WITH ORDINALITY AS s (source_id, contact_id, context, n)
        LEFT JOIN audience_contact c ON c.id = s.contact_id
        ORDER BY s.n
        RETURNING source_id, id
        """,
        [
            *params,
            [source_id for source_id, _ in sources],
            [contact_id for _, contact_id in sources],
            [json.dumps(dict(context or {})) for context in contexts],
        ],
    )
    return dict(rows)


@functools.cache
def _insert_columns() -> tuple:
    """Message's fields other than the id and the per-row ones, with their database types."""
    per_row = {"id", "contact", "to_address", "source_id"}
    return tuple(
        (field, field.db_type(connection)) for field in Message._meta.concrete_fields if field.name not in per_row
    )


def _insert_defaults(fixed: Mapping[str, Any], per_row: tuple[str, ...] = ()) -> tuple[list[str], list[str], list]:
    """Columns, typed placeholders and values for a new Message: ``fixed`` or each field's default."""
    columns, values, params = [], [], []
    for field, db_type in _insert_columns():
        if field.name in per_row:
            continue
        value = fixed[field.name] if field.name in fixed else field.get_default()
        columns.append(field.column)
        values.append(f"%s::{db_type}")
        params.append(None if value is None else field.get_db_prep_save(value, connection))
    return columns, values, params


def _channel_and_sender(
    contact: Contact | None, template: MessageTemplate | None, body: str, sender: Sender | None
) -> tuple[str, Sender]:
    if bool(template) == bool(body.strip()):
        raise MessageRequestError({"template": ["give a template or a body, not both"]})
    channel = template.channel if template else (sender.channel if sender else contact.channel)
    if sender is None:
        sender = selectors.sender_first_active(channel)
        if sender is None:
            raise MessageRequestError({"sender": [f"no active {channel} sender; create one first"]})
    if sender.channel != channel:
        raise MessageRequestError({"sender": [f"the sender is a {sender.channel} sender, the message is {channel}"]})
    if not sender.is_active:
        raise MessageRequestError({"sender": ["the sender is not active"]})
    return channel, sender


def _render_check(
    contact: Contact, channel: str, template: MessageTemplate | None, body: str, context: Mapping[str, Any] | None
) -> None:
    """Refuse now what the send would skip for a placeholder: the contact is known at creation.

    A free-text body is checked like a template's (unknown placeholders, then the contact's values).
    A value that goes missing between now and the send still skips the message at send time.
    """
    field = "template" if template else "body"
    if template is None:
        try:
            template_validate(channel=channel, body=body)
        except ValidationError as exc:
            raise MessageRequestError({"body": exc.message_dict["body"]}) from None
    result = template_render(template or text_template(channel, body), contact=contact, context=context)
    if not result.ok:
        fallback = "the template has no fallback for it" if template else "a free-text body has no fallbacks"
        text = f"{result.skip_reason}: contact {contact.pk} has no value for it and {fallback}"
        raise MessageRequestError({field: [text]})


def message_enqueue(message_id: int, countdown: float = 0) -> None:
    """Hand the send to a worker once the current transaction commits: queued for the next batch
    (``send_queue``), or, for a retry ``countdown`` seconds away, a task of its own."""
    # Both import these services: a cycle at module level.
    from messaging import tasks
    from messaging.services import send_queue

    if countdown:
        transaction.on_commit(lambda: tasks.message_send.apply_async(args=[message_id], countdown=countdown))
    else:
        transaction.on_commit(lambda: send_queue.send_queue_push(message_id))


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
    provider = get_provider(provider_name_for(message.sender.provider))
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
    message.to_address = message.contact.phone
    message.from_address = message.sender.from_address
    return ""


def send_request_for(message: Message) -> SendRequest:
    sender = message.sender
    return SendRequest(
        to=message.to_address or message.contact.phone,
        channel=message.channel,
        from_=sender.from_address,
        messaging_service_sid=sender.messaging_service_sid,
        body="" if message.content_sid else message.body,
        content_sid=message.content_sid,
        content_variables=dict(message.content_variables or {}),
        status_callback=status_callback_url(),
        reference=f"message-{message.pk}",
    )


def message_finish(message: Message, status: MessageStatus, *, claim: datetime | None = None, **fields: Any) -> Message:
    """Leave `sending` (or `unknown`) for ``status`` (conditional: nothing happens if someone else moved it).

    ``claim``: only if the message still holds this claim (a reconciler's, which a new send replaces).
    """
    now = timezone.now()
    # An answer naming a later status (sent) is evidence for the ones it implies too; sending_at
    # stays the claim's (when the request left).
    stamps = [c for c in {MessageStatus.SKIPPED: ("skipped_at",), **STAMP_COLUMNS}.get(status, ()) if c != "sending_at"]
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
        message_enqueue(message.pk, countdown=verdict.retry_in)
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
    ids = list(due.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])
    for message_id in ids:
        message_enqueue(message_id)
    return len(ids)
