"""Consent: every door changes it through ``consent_change``, audited in the same transaction.

The ConsentEvent row is chained to the audit (audience.consent_chain). An opt-out that came from
the person (a STOP keyword), the provider or the suppression list is overridden only by staff with
recorded evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from audience.consent_chain import consent_event_record
from audience.models import ConsentEvent, ConsentEventKind, ConsentSource, ConsentStatus, Contact, Suppression
from audience.phones import phone_hash
from audience.services.contacts import ContactError, actor_name, is_suppressed
from audience.signals import consent_changed

# Where an opt-out came from that only evidence may override (the person's own START aside).
OVERRIDE_ORIGINS = {
    ConsentSource.KEYWORD: "a STOP keyword",
    ConsentSource.PROVIDER: "the provider (the carrier reports the person opted out)",
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
