"""Writes to the audience: contacts, topics and consent.

Every door (admin, API, import, keywords, provider errors) changes consent
through ``consent_change`` so the ConsentEvent audit row is written in the same
transaction as the change itself, chained to the audit (audience.consent_chain).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from audience.attributes import AttributeLimits
from audience.consent_chain import consent_event_record, consent_events_erase
from audience.erasure import Person, contact_traces_erase
from audience.models import (
    Channel,
    ConsentEvent,
    ConsentEventKind,
    ConsentSource,
    ConsentStatus,
    Contact,
    ContactTopic,
    Suppression,
    Topic,
    validate_timezone,
)
from audience.phones import InvalidPhone, normalize_phone, phone_hash
from audience.signals import consent_changed, contact_erasing

IMPORT_ERRORS_MAX_BATCHES = 200  # a purge run stops after this many batches; the next goes on


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


# Where an opt-out came from that only evidence may override (the person's own START aside).
OVERRIDE_ORIGINS = {
    ConsentSource.KEYWORD: "a STOP keyword",
    ConsentSource.PROVIDER: "the provider (the carrier reports the person opted out, e.g. error 21610)",
    "suppression": "the suppression list",
}
OVERRIDE_SOURCES = (ConsentSource.API, ConsentSource.ADMIN)  # the doors staff record evidence through
EVIDENCE_LIMITS = {"document": 255, "reason": 2000}


class ConsentEvidenceRequired(ContactError):
    """An opt-in or a suppression lift that needs recorded evidence lacks it; message_dict names the field.

    ``origin`` is the opt-out the evidence would override (a key of OVERRIDE_ORIGINS).
    """

    def __init__(self, message, *, origin: str):
        super().__init__(message)
        self.origin = origin


def consent_opt_out_origin(contact: Contact, suppression: Suppression | None = None) -> str | None:
    """Why opting ``contact`` in needs evidence: "keyword", "provider", "suppression", or None when it does not.

    The phone's suppression entry, or the contact's latest opt-out: by a keyword, by the
    provider, or forced by the suppression list when the contact was created or imported.
    """
    if contact.consent_status != ConsentStatus.OPTED_OUT:
        return None
    if suppression is not None or is_suppressed(contact.phone):
        return "suppression"
    opt_outs = ConsentEvent.objects.filter(
        contact_id=contact.pk, kind=ConsentEventKind.CHANGE, to_status=ConsentStatus.OPTED_OUT
    )
    last = opt_outs.order_by("-created_at", "-id").only("source", "evidence").first()
    if last is None:
        return None
    if (last.evidence or {}).get("suppressed"):
        return "suppression"
    return last.source if last.source in OVERRIDE_ORIGINS else None


def consent_evidence_clean(evidence: dict | None, *, actor, origin: str, source: str) -> dict:
    """The evidence of an override of ``origin``: who (a named user), what (a document and a reason).

    When is the event's own time. Raises ConsentEvidenceRequired naming each missing field.
    """
    described = OVERRIDE_ORIGINS[origin]
    if source not in OVERRIDE_SOURCES:
        raise ConsentEvidenceRequired(
            {"status": [f"the opt-out came from {described}; only staff can override it, with evidence"]},
            origin=origin,
        )
    evidence = dict(evidence or {})
    errors: dict[str, list[str]] = {}
    wanted = {
        "document": "a reference to the signed form or document in which the person gave consent",
        "reason": "why this consent is recorded, in your words",
    }
    for name, what in wanted.items():
        value = evidence.get(name)
        if not isinstance(value, str) or not value.strip():
            errors[name] = [f"required: {what} (the opt-out came from {described})"]
        elif len(value.strip()) > EVIDENCE_LIMITS[name]:
            errors[name] = [f"at most {EVIDENCE_LIMITS[name]} characters"]
        else:
            evidence[name] = value.strip()
    if not actor_name(actor):
        errors["actor"] = ["an override is recorded under the name of the user who makes it"]
    if errors:
        raise ConsentEvidenceRequired(errors, origin=origin)
    return {**evidence, "overrides": origin}


def consent_change_check(
    contact: Contact, *, to_status: str, source: str, actor=None, evidence: dict | None = None
) -> dict:
    """The evidence ``consent_change`` would record for this change; raises what it would raise.

    For a form to show the problems on its fields before it saves anything.
    """
    _status_and_source_check(to_status, source)
    return _evidence_for(contact, to_status, source, actor, evidence, suppression=None)


def _status_and_source_check(to_status: str, source: str) -> None:
    if to_status not in ConsentStatus.values:
        raise ContactError({"status": [f"{to_status!r} is not one of {', '.join(ConsentStatus.values)}"]})
    if source not in ConsentSource.values:
        raise ContactError({"source": [f"{source!r} is not one of {', '.join(ConsentSource.values)}"]})


def _evidence_for(contact, to_status, source, actor, evidence, *, suppression) -> dict:
    # An opt-in keyword (START) is the person's own word: its message is the evidence.
    if to_status != ConsentStatus.OPTED_IN or source == ConsentSource.KEYWORD:
        return dict(evidence or {})
    origin = consent_opt_out_origin(contact, suppression)
    if origin is None:
        return dict(evidence or {})
    return consent_evidence_clean(evidence, actor=actor, origin=origin, source=source)


def _suppression_summary(suppression: Suppression) -> dict:
    """What an audit row keeps of a lifted suppression entry (its evidence stays out: it held an erased person's)."""
    return {
        "id": suppression.pk,
        "reason": suppression.reason,
        "source": suppression.source,
        "created_at": suppression.created_at.isoformat(),
    }


@transaction.atomic
def consent_change(
    contact: Contact,
    *,
    to_status: str,
    source: str,
    actor=None,
    evidence: dict | None = None,
) -> bool:
    """Move a contact to ``to_status`` and audit it with the evidence given; returns False when nothing changed.

    Opting in a contact whose opt-out came from a keyword, the provider or the
    suppression list needs evidence (``consent_evidence_clean``), except by the
    person's own opt-in keyword (START); it then lifts the phone's suppression
    entry, which the audit row records. Imports never opt anyone back in.
    """
    _status_and_source_check(to_status, source)
    locked = Contact.objects.select_for_update().get(pk=contact.pk)
    if locked.consent_status == to_status:
        return False
    hashed = phone_hash(locked.phone)
    suppression = None
    if to_status == ConsentStatus.OPTED_IN:
        suppression = Suppression.objects.select_for_update().filter(phone_hash=hashed).first()
    evidence = _evidence_for(locked, to_status, source, actor, evidence, suppression=suppression)
    if suppression is not None:
        evidence["lifted_suppression"] = _suppression_summary(suppression)
        suppression.delete()
    now = timezone.now()
    update = {"consent_status": to_status, "consent_updated_at": now}
    update["opted_in_at" if to_status == ConsentStatus.OPTED_IN else "opted_out_at"] = now
    Contact.objects.filter(pk=locked.pk).update(**update)
    consent_event_record(
        contact=locked,
        hashed_phone=hashed,
        from_status=locked.consent_status,
        to_status=to_status,
        source=source,
        actor=actor_name(actor),
        evidence=evidence,
    )
    contact_id, from_status = locked.pk, locked.consent_status
    transaction.on_commit(
        lambda: consent_changed.send(
            sender=Contact, contact_id=contact_id, from_status=from_status, to_status=to_status
        )
    )
    for name, value in update.items():
        setattr(contact, name, value)
    return True


@dataclass
class ConsentChanges:
    """What a change of many contacts did: how many changed, and who was refused and why."""

    changed: int = 0
    refused: list[tuple[Contact, ConsentEvidenceRequired]] = field(default_factory=list)


def consent_change_many(contact_ids: Iterable[int], **kwargs: Any) -> ConsentChanges:
    """Apply consent_change to each contact (admin actions), each in its own transaction.

    A contact whose change needs evidence the batch does not carry is left as it is and
    listed in ``refused``; the others change.
    """
    result = ConsentChanges()
    for contact in Contact.objects.filter(pk__in=list(contact_ids)).order_by("pk"):
        try:
            result.changed += consent_change(contact, **kwargs)
        except ConsentEvidenceRequired as exc:
            result.refused.append((contact, exc))
    return result


@transaction.atomic
def suppression_lift(suppression: Suppression, *, actor, evidence: dict | None, source: str = ConsentSource.ADMIN):
    """Remove a phone from the suppression list, with the evidence an opt-in override needs, and audit it.

    The phone's contact, if there is one, stays opted out: lifting lets them be opted in again.
    """
    evidence = consent_evidence_clean(evidence, actor=actor, origin="suppression", source=source)
    locked = Suppression.objects.select_for_update().filter(pk=suppression.pk).first()
    if locked is None:
        raise ContactError({"suppression": ["this suppression entry was already lifted"]})
    consent_event_record(
        contact=None,
        hashed_phone=locked.phone_hash,
        kind=ConsentEventKind.SUPPRESSION_LIFTED,
        from_status="",
        to_status="",
        source=source,
        actor=actor_name(actor),
        evidence={**evidence, "lifted_suppression": _suppression_summary(locked)},
    )
    locked.delete()


@transaction.atomic
def contact_delete(contact: Contact, *, actor=None) -> None:
    """Delete a contact: an erasure (``contact_erase``), as the API's DELETE and the admin do."""
    contact_erase(contact, actor=actor)


@transaction.atomic
def contact_erase(contact: Contact, *, actor=None) -> None:
    """Remove a person's data and keep only their suppression entry and anonymised counts.

    Goes: the contact row, its attributes and topic links, the bodies, addresses and raw
    payloads of their messages (messaging, through ``contact_erasing``), their campaign events,
    the evidence of their consent events and their link to the contact, and what imports and the
    admin kept of them (``audience.erasure``: row problems, jobs' texts and uploaded files, the
    admin's history). Stays: an opted-out phone's suppression entry (a keyed hash), consent
    events (hash, statuses, times), campaign recipients and messages without content, so
    reporting counters and the runs' recipient figures do not move. Recipients keep the old
    contact id, which no longer names anyone (that link has no database foreign key).
    """
    locked = Contact.objects.select_for_update().get(pk=contact.pk)
    person = Person.of(locked)
    if locked.consent_status == ConsentStatus.OPTED_OUT:
        _suppression_keep(locked, actor, person)
    contact_erasing.send(sender=Contact, contact_id=locked.pk, phone=locked.phone)
    contact_traces_erase(locked)
    consent_events_erase(locked, actor=actor_name(actor))
    _related_rows_settle(locked.pk)
    with connection.cursor() as cursor:
        # Not Model.delete(): its cascade would drop the anonymised recipients counted by reporting.
        cursor.execute("DELETE FROM audience_contact WHERE id = %s", [locked.pk])


def _suppression_keep(contact: Contact, actor, person: Person) -> None:
    """An opted-out phone stays suppressed so it cannot silently come back; its evidence names no one."""
    last = contact.consent_events.filter(to_status=ConsentStatus.OPTED_OUT).first()
    Suppression.objects.get_or_create(
        phone_hash=phone_hash(contact.phone),
        defaults={
            "reason": "opted out before the contact was deleted",
            "source": last.source if last else ConsentSource.ADMIN,
            "evidence": {
                "opted_out_at": contact.opted_out_at.isoformat() if contact.opted_out_at else None,
                "consent_event_id": last.pk if last else None,
                "evidence": person.scrub_json(last.evidence) if last else {},
                "deleted_by": actor_name(actor),
            },
        },
    )


def _related_rows_settle(contact_id: int) -> None:
    """Apply each relation's on_delete, but keep rows linked without a database FK (anonymised)."""
    for relation in Contact._meta.related_objects:
        field = relation.field
        if relation.many_to_many or not field.concrete:
            continue
        rows = relation.related_model._base_manager.filter(**{field.attname: contact_id})
        if relation.related_model is ContactTopic:
            rows.delete()
        elif not field.db_constraint:
            continue
        elif field.remote_field.on_delete is models.SET_NULL:
            rows.update(**{field.attname: None})
        elif field.remote_field.on_delete is models.CASCADE:
            rows.delete()
        else:
            raise ContactError({"contact": [f"{relation.related_model.__name__} rows block the erasure"]})


def import_errors_purge(*, days: int | None = None, batch_size: int | None = None) -> int:
    """Delete row problems of imports finished more than ``days`` ago (0: keep forever).

    Each batch is its own short transaction (``FOR UPDATE SKIP LOCKED``); returns rows deleted.
    """
    days = settings.RETENTION_IMPORT_ERRORS_DAYS if days is None else days
    if days <= 0:
        return 0
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    cutoff = timezone.now() - timedelta(days=days)
    total = 0
    for _ in range(IMPORT_ERRORS_MAX_BATCHES):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                """
                DELETE FROM audience_importrowerror WHERE id IN (
                    SELECT e.id FROM audience_importrowerror e
                    JOIN audience_importjob j ON j.id = e.job_id
                    WHERE j.finished_at < %s
                    LIMIT %s FOR UPDATE OF e SKIP LOCKED
                )
                """,
                [cutoff, batch_size],
            )
            done = cursor.rowcount
        total += done
        if done < batch_size:
            break
    return total


def contact_touch_inbound(contact: Contact, at=None) -> None:
    Contact.objects.filter(pk=contact.pk).update(last_inbound_at=at or timezone.now())
