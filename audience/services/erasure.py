"""Erasure: a person's data removed, their opt-out kept as a suppression entry that names no one."""

from __future__ import annotations

from django.db import connection, models, transaction

from audience.consent_chain import consent_events_erase
from audience.erasure import Person, contact_traces_erase
from audience.models import ConsentSource, ConsentStatus, Contact, ContactTopic, Suppression
from audience.phones import phone_hash
from audience.services.contacts import ContactError, actor_name
from audience.signals import contact_erasing


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
        cursor.execute("DELETE FROM audience_contact WHERE id = %(id)s", {"id": locked.pk})


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
        # django-stubs leaves out ForeignKey.db_constraint, which ForeignKey.__init__ sets.
        elif isinstance(field, models.ForeignKey) and not field.db_constraint:  # type: ignore[attr-defined]
            continue
        elif field.remote_field.on_delete is models.SET_NULL:
            rows.update(**{field.attname: None})
        elif field.remote_field.on_delete is models.CASCADE:
            rows.delete()
        else:
            raise ContactError({"contact": [f"{relation.related_model.__name__} rows block the erasure"]})
