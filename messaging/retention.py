"""Retention: raw provider payloads and inbound bodies are cleared once they are old enough.

The rows stay (events are the deduplication ledger and each message's history; messages are
counted by reporting): only the personal content goes. Each batch is one short transaction
that takes rows with ``FOR UPDATE SKIP LOCKED``, so a purge never waits on, nor blocks, the
webhooks; running it twice, or in two workers at once, clears each row once.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from messaging.links.follow import links_forget
from messaging.models import Direction, Link, Message, MessageStatus, ProviderCallback

SKIP_ERASED = "contact erased"
MAX_BATCHES_PER_RUN = 200  # a run stops after this many batches; the next run goes on

# The partial indexes of migration 0005 serve these WHERE clauses: only rows still holding data.
_PAYLOADS_SQL = """
UPDATE messaging_providercallback SET payload = '{}'::jsonb
WHERE id IN (
    SELECT id FROM messaging_providercallback
    WHERE received_at < %(cutoff)s AND payload <> '{}'::jsonb
    ORDER BY received_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
"""
_INBOUND_SQL = """
UPDATE messaging_message SET body = '', media = '[]'::jsonb, num_media = 0
WHERE id IN (
    SELECT id FROM messaging_message
    WHERE direction = %(inbound)s AND created_at < %(cutoff)s AND (body <> '' OR media <> '[]'::jsonb)
    ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
"""


def purge_in_batches(sql: str, cutoff, batch_size: int, params: dict | None = None) -> int:
    """Run ``sql`` (parameters: ``cutoff``, ``limit`` and ``params``) batch after batch, each committed alone;
    returns rows."""
    total = 0
    for _ in range(MAX_BATCHES_PER_RUN):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, {**(params or {}), "cutoff": cutoff, "limit": batch_size})
            done = cursor.rowcount
        total += done
        if done < batch_size:
            break
    return total


def _cutoff(days: int):
    return timezone.now() - timedelta(days=days)


def webhook_payloads_purge(*, days: int | None = None, batch_size: int | None = None) -> int:
    """Empty the raw payload of provider events older than ``days`` (0: keep forever)."""
    days = settings.RETENTION_WEBHOOK_PAYLOAD_DAYS if days is None else days
    if days <= 0:
        return 0
    return purge_in_batches(_PAYLOADS_SQL, _cutoff(days), batch_size or settings.RETENTION_BATCH_SIZE)


def inbound_bodies_purge(*, days: int | None = None, batch_size: int | None = None) -> int:
    """Blank the body and media links of inbound messages older than ``days`` (0: keep forever)."""
    days = settings.RETENTION_INBOUND_BODY_DAYS if days is None else days
    if days <= 0:
        return 0
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    return purge_in_batches(_INBOUND_SQL, _cutoff(days), batch_size, {"inbound": Direction.INBOUND})


def retention_purge() -> dict[str, int]:
    return {"webhook_payloads": webhook_payloads_purge(), "inbound_bodies": inbound_bodies_purge()}


# --- Erasure -------------------------------------------------------------------------------


def _digits_regex(phone: str) -> str:
    """The last nine digits of ``phone`` with any separators between them (a POSIX regex)."""
    return "[^0-9]*".join(phone[-9:])


def contact_messages_erase(*, contact_id: int, phone: str, **kwargs) -> int:
    """Clear what messages hold about an erased contact; receiver of audience's contact_erasing.

    Bodies, the contact's address, rendered values, media links, error texts and raw provider
    payloads go; status, times, codes, price and the link to what caused the message stay, so
    reporting counts them as before. A message not sent yet is skipped: there is no one to send to.
    Returns how many messages were cleared.
    """
    addresses = [phone, f"whatsapp:{phone}", f"sms:{phone}"]
    messages = Message.objects.filter(
        Q(contact_id=contact_id) | Q(to_address__in=addresses) | Q(from_address__in=addresses)
    )
    ids = list(messages.values_list("pk", flat=True))
    if not ids:
        return 0
    sids = [sid for sid in Message.objects.filter(pk__in=ids).values_list("provider_sid", flat=True) if sid]
    ProviderCallback.objects.filter(Q(message_id__in=ids) | Q(provider_sid__in=sids)).update(payload={})
    # A tracked link's URL may carry the person's values ({{ attributes.* }}): it goes, its clicks stay.
    links_forget(Link.objects.filter(message_id__in=ids).exclude(url=""))
    now = timezone.now()
    Message.objects.filter(pk__in=ids, status=MessageStatus.PENDING).update(
        status=MessageStatus.SKIPPED, skip_reason=SKIP_ERASED, skipped_at=now, next_attempt_at=None
    )
    return Message.objects.filter(pk__in=ids).update(
        contact=None,
        body="",
        body_source="",
        to_address=Case(When(direction=Direction.OUTBOUND, then=Value("")), default=F("to_address")),
        from_address=Case(When(direction=Direction.INBOUND, then=Value("")), default=F("from_address")),
        content_variables={},
        render_context={},
        media=[],
        num_media=0,
        error_message="",
        # A client's key may name the person ("welcome-+2547..."); a NULL key just no longer deduplicates.
        idempotency_key=Case(
            When(idempotency_key__regex=_digits_regex(phone), then=Value(None)), default=F("idempotency_key")
        ),
        updated_at=now,
    )
