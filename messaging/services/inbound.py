"""Inbound messages: store once, attach to a contact, act on consent keywords.

A contact first met through an inbound message starts opted out: writing to us
is not consent to campaigns. An opt-in keyword (START, YES, UNSTOP) opts them in,
audited with the message as evidence, like every keyword.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from audience.models import Channel, ConsentSource, ConsentStatus, Contact
from audience.phones import InvalidPhone, normalize_phone
from audience.services import ContactError, consent_change, contact_create, contact_touch_inbound
from messaging.keywords import Keyword, keyword_parse
from messaging.models import Direction, Message, MessageStatus, ProviderCallback, Sender
from messaging.signals import inbound_message_received

MAX_MEDIA = 10  # Twilio's limit per message
KEYWORD_ACTOR = "inbound keyword"


def inbound_message_record(
    *,
    provider_sid: str,
    from_address: str,
    to_address: str,
    body: str,
    payload: dict,
    channel: str | None = None,
) -> Message:
    """Store an inbound message and act on it; a replay of the same sid returns the stored one."""
    existing = Message.objects.filter(provider_sid=provider_sid).first()
    if existing is not None:
        # Twilio sends it again when our answer failed: perhaps the process died after the commit,
        # before the receivers ran (a campaign keyword's answer). They run again; each is idempotent.
        _announce(existing, keyword_parse(existing.body))
        return existing
    channel = channel or _channel_of(from_address)
    found = keyword_parse(body)
    with transaction.atomic():
        now = timezone.now()
        contact = _contact_find_or_create(from_address, channel, provider_sid, found)
        message = _message_build(provider_sid, from_address, to_address, body, payload, channel, contact, now)
        try:
            with transaction.atomic():
                message.save()
        except IntegrityError:  # the same sid recorded concurrently: that one acts, this one is a replay
            return Message.objects.get(provider_sid=provider_sid)
        ProviderCallback.objects.bulk_create(
            [
                ProviderCallback(
                    kind=ProviderCallback.Kind.INBOUND,
                    provider_sid=provider_sid,
                    status=MessageStatus.RECEIVED,
                    message=message,
                    payload=payload,
                    applied_at=now,
                )
            ],
            ignore_conflicts=True,
        )
        if contact is not None:
            contact_touch_inbound(contact, now)
            _keyword_apply(contact, found, provider_sid)
        _announce(message, found)
    return message


def _announce(message: Message, found: tuple[Keyword, str] | None) -> None:
    keyword = found[0].value if found else None
    transaction.on_commit(lambda: inbound_message_received.send(sender=Message, message_id=message.pk, keyword=keyword))


def _channel_of(address: str) -> str:
    return Channel.WHATSAPP if address.strip().lower().startswith("whatsapp:") else Channel.SMS


def _evidence(provider_sid: str, found: tuple[Keyword, str] | None) -> dict:
    evidence = {"message_sid": provider_sid}
    if found:
        evidence["keyword"] = found[1]
    return evidence


def _contact_find_or_create(
    from_address: str, channel: str, provider_sid: str, found: tuple[Keyword, str] | None
) -> Contact | None:
    try:
        phone = normalize_phone(from_address)
    except InvalidPhone:  # a short code or alphanumeric sender: keep the message, no contact
        return None
    contact = Contact.objects.filter(phone=phone).first()
    if contact is not None:
        return contact
    opting_out = bool(found) and found[0] == Keyword.STOP
    try:
        return contact_create(
            phone=phone,
            channel=channel,
            consent_status=ConsentStatus.OPTED_OUT,
            source=ConsentSource.KEYWORD if opting_out else ConsentSource.PROVIDER,
            actor=KEYWORD_ACTOR if opting_out else "inbound message",
            evidence=_evidence(provider_sid, found if opting_out else None) | {"first_inbound": True},
        )
    except ContactError:  # created concurrently by another inbound message from the same phone
        return Contact.objects.get(phone=phone)


def _message_build(
    provider_sid: str,
    from_address: str,
    to_address: str,
    body: str,
    payload: dict,
    channel: str,
    contact: Contact | None,
    now,
) -> Message:
    media = _media_of(payload)
    return Message(
        direction=Direction.INBOUND,
        status=MessageStatus.RECEIVED,
        received_at=now,
        provider_sid=provider_sid,
        channel=channel,
        from_address=from_address,
        to_address=to_address,
        body=body,
        contact=contact,
        sender=Sender.objects.filter(from_address=to_address).first(),
        num_media=len(media),
        media=media,
    )


def _media_of(payload: dict) -> list[dict[str, str]]:
    try:
        count = min(int(payload.get("NumMedia") or 0), MAX_MEDIA)
    except (TypeError, ValueError):
        count = 0
    media = []
    for index in range(max(count, 0)):
        url = str(payload.get(f"MediaUrl{index}") or "")
        if url:
            media.append({"url": url, "content_type": str(payload.get(f"MediaContentType{index}") or "")})
    return media


def _keyword_apply(contact: Contact, found: tuple[Keyword, str] | None, provider_sid: str) -> None:
    if not found or found[0] == Keyword.HELP:
        return
    to_status = ConsentStatus.OPTED_OUT if found[0] == Keyword.STOP else ConsentStatus.OPTED_IN
    consent_change(
        contact,
        to_status=to_status,
        source=ConsentSource.KEYWORD,
        actor=KEYWORD_ACTOR,
        evidence=_evidence(provider_sid, found),
    )
