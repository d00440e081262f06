"""Creating outbound messages: one from a request (the API, a staff sample, a keyword answer) or many
from a template for a list of sources (campaign recipients) in one INSERT.

A request is checked here, where the contact is known: template or body, the sender and its
channel, and rendering; what fails raises ``MessageRequestError`` naming the field. Created
messages are pending; ``messaging.services.send`` sends them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, cast

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, models, transaction
from django.utils import timezone

from audience.models import Contact
from config import idempotency, sql
from messaging import selectors
from messaging.models import Direction, Message, MessageTemplate, Sender
from messaging.services.send import message_enqueue
from messaging.services.templates import template_render, template_validate, text_template


class MessageRequestError(ValidationError):
    """A message could not be created as asked; message_dict names the field."""


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
                _message_insert(message)
        else:
            _message_insert(message)  # one INSERT, committed on its own
    except IntegrityError:
        # The same key sent concurrently: that request created it (a replay of it, or a conflict).
        existing = message_replay(idempotency_key, request_hash) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    if enqueue:
        message_enqueue(message.pk, message.sender_id)
    return message, True


def _message_insert(message: Message) -> None:
    """``message.save()`` for a new message as one prepared INSERT (no signal listens for it).

    Compiling the ORM's INSERT of Message's 40 columns cost a transactional send more CPU than
    PostgreSQL spends storing it; the statement's text is the same every time, so it is built once.
    """
    wrapper, params = connections[DEFAULT_DB_ALIAS], []
    for field, plain in _insert_one_fields():
        value = field.pre_save(message, True)
        # A plain field's str, int, bool or None, and any field's None but a JSON one's, go as they
        # are (the placeholder's cast types them); anything else through the field's conversion.
        if (value is None and plain is not None) or (plain and type(value) in _PLAIN):
            params.append(value)
        else:
            params.append(field.get_db_prep_save(value, wrapper))
    row = sql.fetch_one_prepared(_insert_one_sql(), params, retry=False)  # no key: never twice
    message.pk = cast(tuple, row)[0]  # RETURNING id: a row, or an error raised
    message._state.adding, message._state.db = False, wrapper.alias


_PLAIN = frozenset({str, int, bool})


@functools.cache
def _insert_one_fields() -> tuple:
    """(field, plain) for Message's fields but the id. plain: True if its str, int or bool is what it
    stores, None for a JSON field (whose None is JSON, not NULL), else False."""
    plain = (models.CharField, models.TextField, models.IntegerField, models.BooleanField, models.ForeignKey)
    return tuple(
        (field, None if isinstance(field, models.JSONField) else isinstance(field, plain))
        for field in Message._meta.concrete_fields
        if not field.primary_key
    )


@functools.cache
def _insert_one_sql() -> str:
    fields = [field for field, _ in _insert_one_fields()]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    values = ", ".join(f"%s::{field.db_type(connection)}" for field in fields)
    return f"INSERT INTO {Message._meta.db_table} ({columns}) VALUES ({values}) RETURNING id"


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
    if template:
        channel = template.channel
    elif sender:
        channel = sender.channel
    elif contact is not None:
        channel = contact.channel
    else:
        raise MessageRequestError({"sender": ["give a sender, a template or a contact"]})
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
