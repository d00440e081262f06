"""Reads for messaging: templates, senders and messages with their history."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from messaging.models import Message, MessageEvent, MessageTemplate, Sender


def template_list() -> QuerySet[MessageTemplate]:
    return MessageTemplate.objects.all()


def sender_list() -> QuerySet[Sender]:
    return Sender.objects.all()


def sender_first_active(channel: str) -> Sender | None:
    """The default sender of a channel: the first active one by name."""
    return Sender.objects.filter(channel=channel, is_active=True).order_by("name", "pk").first()


def message_list() -> QuerySet[Message]:
    return Message.objects.select_related("contact", "sender", "template")


def message_with_history(queryset: QuerySet[Message] | None = None) -> QuerySet[Message]:
    """Messages with their events (the status history), oldest event first."""
    events = MessageEvent.objects.order_by("received_at", "id")
    return (queryset if queryset is not None else message_list()).prefetch_related(Prefetch("events", events))
