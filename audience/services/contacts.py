"""Contacts and their topics: create, update, tag; every door's writes to a contact's fields."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audience.attributes import AttributeLimits
from audience.consent_chain import consent_event_record
from audience.models import (
    Channel,
    ConsentSource,
    ConsentStatus,
    Contact,
    ContactTopic,
    Suppression,
    Topic,
    validate_timezone,
)
from audience.phones import InvalidPhone, normalize_phone, phone_hash


class ContactError(ValidationError):
    """A contact write was refused; message_dict names the field."""


def actor_name(actor) -> str:
    """Who acted, for audit rows: a user's name, a system part's label, or empty."""
    if actor is None:
        return ""
    if isinstance(actor, str):
        return actor[:150]
    return getattr(actor, "get_username", lambda: str(actor))()[:150]


def is_suppressed(phone: str) -> bool:
    return Suppression.objects.filter(phone_hash=phone_hash(phone)).exists()


def _clean_fields(data: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    if "phone" in data:
        try:
            cleaned["phone"] = normalize_phone(data["phone"])
        except InvalidPhone as exc:
            errors["phone"] = [str(exc)]
    if "timezone" in data:
        try:
            validate_timezone(data["timezone"] or "")
            cleaned["timezone"] = data["timezone"] or ""
        except ValidationError as exc:
            errors["timezone"] = exc.messages
    if "channel" in data:
        if data["channel"] not in Channel.values:
            errors["channel"] = [f"{data['channel']!r} is not one of {', '.join(Channel.values)}"]
        else:
            cleaned["channel"] = data["channel"]
    if "attributes" in data:
        if not isinstance(data["attributes"], dict):
            errors["attributes"] = ["attributes must be a JSON object"]
        else:
            given = {key: value for key, value in data["attributes"].items() if value is not None}
            if reason := _attributes_problem(given):
                errors["attributes"] = [reason]
            cleaned["attributes"] = data["attributes"]
    for name in ("name", "email", "locale"):
        if name in data:
            cleaned[name] = data[name] or ""
    if errors:
        raise ContactError(errors)
    return cleaned


def _attributes_problem(attributes: dict) -> str | None:
    problem = AttributeLimits.from_settings().problem(attributes)
    if problem is None:
        return None
    field, reason = problem
    return reason if field == "attributes" else f"{field[:80]!r}: {reason}"


@transaction.atomic
def contact_create(
    *,
    phone: str,
    consent_status: str = ConsentStatus.OPTED_IN,
    topics: Iterable[Topic] = (),
    source: str = ConsentSource.API,
    actor=None,
    evidence: dict | None = None,
    **fields: Any,
) -> Contact:
    """Create a contact; a suppressed phone stays opted out whatever was asked."""
    cleaned = _clean_fields({"phone": phone, **fields})
    if consent_status not in ConsentStatus.values:
        raise ContactError({"consent_status": [f"{consent_status!r} is not one of {', '.join(ConsentStatus.values)}"]})
    suppressed = is_suppressed(cleaned["phone"])
    if suppressed:
        consent_status = ConsentStatus.OPTED_OUT
    now = timezone.now()
    contact = Contact(
        consent_status=consent_status,
        consent_updated_at=now,
        opted_in_at=now if consent_status == ConsentStatus.OPTED_IN else None,
        opted_out_at=now if consent_status == ConsentStatus.OPTED_OUT else None,
        **cleaned,
    )
    contact.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            contact.save()
    except IntegrityError:
        raise ContactError({"phone": [f"a contact with phone {cleaned['phone']} already exists"]}) from None
    consent_event_record(
        contact=contact,
        hashed_phone=phone_hash(contact.phone),
        from_status="",
        to_status=consent_status,
        source=source,
        actor=actor_name(actor),
        evidence={**(evidence or {}), **({"suppressed": True} if suppressed else {})},
    )
    contact_set_topics(contact, topics)
    return contact


@transaction.atomic
def contact_update(contact: Contact, *, data: dict[str, Any], topics: Iterable[Topic] | None = None) -> Contact:
    """Update fields; attributes are merged key by key (a null value removes the key)."""
    cleaned = _clean_fields(data)
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    if "attributes" in cleaned:
        merged = {**contact.attributes, **cleaned.pop("attributes")}
        contact.attributes = {key: value for key, value in merged.items() if value is not None}
        if reason := _attributes_problem(contact.attributes):  # new keys on top of those kept
            raise ContactError({"attributes": [reason]})
    if "phone" in cleaned and cleaned["phone"] != contact.phone:
        if Contact.objects.filter(phone=cleaned["phone"]).exclude(pk=contact.pk).exists():
            raise ContactError({"phone": [f"a contact with phone {cleaned['phone']} already exists"]})
    for name, value in cleaned.items():
        setattr(contact, name, value)
    contact.full_clean(validate_unique=False)
    contact.save()
    if topics is not None:
        contact_set_topics(contact, topics)
    return contact


def contact_set_topics(contact: Contact, topics: Iterable[Topic]) -> None:
    wanted = {topic.pk for topic in topics}
    ContactTopic.objects.filter(contact=contact).exclude(topic_id__in=wanted).delete()
    existing = set(ContactTopic.objects.filter(contact=contact).values_list("topic_id", flat=True))
    ContactTopic.objects.bulk_create(
        [ContactTopic(contact=contact, topic_id=pk) for pk in wanted - existing], ignore_conflicts=True
    )


def contacts_add_topic(contact_ids: Iterable[int], topic: Topic) -> int:
    """Add a topic to many contacts in one statement; returns how many were added."""
    rows = [ContactTopic(contact_id=pk, topic=topic) for pk in contact_ids]
    before = ContactTopic.objects.filter(topic=topic).count()
    ContactTopic.objects.bulk_create(rows, ignore_conflicts=True, batch_size=5000)
    return ContactTopic.objects.filter(topic=topic).count() - before


def topic_get_or_create(name: str) -> Topic:
    name = name.strip().lower()
    Topic(name=name).clean_fields(exclude=["description"])
    topic, _ = Topic.objects.get_or_create(name=name)
    return topic


def contact_touch_inbound(contact: Contact, at=None) -> None:
    Contact.objects.filter(pk=contact.pk).update(last_inbound_at=at or timezone.now())
