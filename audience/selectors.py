"""Reads of the audience, shared by the API, the admin and later apps."""

from __future__ import annotations

from django.db.models import Prefetch, Q, QuerySet

from audience.models import ConsentEvent, Contact, Topic
from audience.phones import normalize_phone, phone_hash


def contact_list() -> QuerySet[Contact]:
    return Contact.objects.prefetch_related(Prefetch("topics", queryset=Topic.objects.only("id", "name")))


def contact_consent_history(contact: Contact) -> QuerySet[ConsentEvent]:
    return ConsentEvent.objects.filter(contact=contact).order_by("-created_at", "-id")


def phone_consent_history(e164: str) -> QuerySet[ConsentEvent]:
    """Every consent event of a phone: its contact's, and those an erased contact left (found by hash only)."""
    contact_ids = list(Contact.objects.filter(phone=e164).values_list("pk", flat=True))
    return ConsentEvent.objects.filter(
        Q(contact_id__in=contact_ids) | Q(contact__isnull=True, phone_hash=phone_hash(e164))
    ).order_by("-created_at", "-id")


def contact_by_id_or_phone(value: str) -> Contact | None:
    """The contact a person named by id or by phone (any spelling); raises InvalidPhone for neither."""
    value = value.strip()
    if value.isdigit() and (found := Contact.objects.filter(pk=int(value)).first()):
        return found
    return Contact.objects.filter(phone=normalize_phone(value)).first()
