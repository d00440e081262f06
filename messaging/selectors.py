"""Reads for messaging: templates, senders and messages with their history."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from messaging.models import Message, MessageStatus, MessageTemplate, ProviderCallback, Sender


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
    """Messages with their provider callbacks (the status history), oldest first, and staff resolutions."""
    callbacks = ProviderCallback.objects.order_by("received_at", "id")
    return (queryset if queryset is not None else message_list()).prefetch_related(
        Prefetch("callbacks", callbacks), "resolutions"
    )


# --- Outcomes unknown ----------------------------------------------------------------------


def unknown_window() -> timedelta:
    """How long after its send a message whose outcome is unknown is looked up before it is failed."""
    return timedelta(minutes=settings.DELIVERY_UNKNOWN_GIVE_UP_MINUTES)


def unknown_gives_up_at(message: Message) -> datetime | None:
    """When the automatic lookups of an unknown outcome stop and the message is failed; None if not unknown."""
    if message.status != MessageStatus.UNKNOWN:
        return None
    return (message.sending_at or message.created_at) + unknown_window()


def gives_up_text(at: datetime | None, now: datetime | None = None) -> str:
    """'2026-12-04 14:05 UTC (in 52 min)': when an unknown outcome gives up, and the time left."""
    if at is None:
        return "—"
    minutes = round((at - (now or timezone.now())).total_seconds() / 60)
    left = f"in {minutes} min" if minutes > 0 else "due: the next failed lookup fails it"
    return f"{at:%Y-%m-%d %H:%M} UTC ({left})"
