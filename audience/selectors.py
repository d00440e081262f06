"""Reads of the audience, shared by the API, the admin and later apps."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from audience.models import ConsentEvent, Contact, Topic


def contact_list() -> QuerySet[Contact]:
    return Contact.objects.prefetch_related(Prefetch("topics", queryset=Topic.objects.only("id", "name")))


def contact_consent_history(contact: Contact) -> QuerySet[ConsentEvent]:
    return ConsentEvent.objects.filter(contact=contact).order_by("-created_at", "-id")


def topic_list() -> QuerySet[Topic]:
    return Topic.objects.all()
