"""Storing events first: checked in Python, stored in one statement per request, matched by the workers.

A request's events are checked in Python, their contacts found in one query and the events
inserted in one INSERT ... ON CONFLICT (idempotency_key) DO NOTHING: the keys it did not insert
are replays (or, with another body, conflicts), read back in one more query. Once the
transaction commits the events are durable and a matcher is woken (``events_kick``).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import serializers as drf_serializers

from audience import services as audience_services
from audience.models import ConsentSource, ConsentStatus, Contact
from audience.phones import InvalidPhone, normalize_phone, phone_hash
from campaigns.models import (
    Event,
    EventStatus,
)
from campaigns.services.events.kick import events_kick
from config import idempotency, sql

logger = logging.getLogger(__name__)


class EventError(ValidationError):
    """An event was refused; message_dict names the field."""


MAX_BATCH = 1000
_occurred_at_field = drf_serializers.DateTimeField()


class Outcome:
    """What became of one event of a request: accepted, replayed, unknown_contact or error."""

    ACCEPTED, REPLAYED, UNKNOWN_CONTACT, ERROR = "accepted", "replayed", "unknown_contact", "error"
    __slots__ = ("index", "status", "event_id", "event_status", "code", "errors")

    def __init__(self, index: int, status: str, *, event_id=None, event_status="", code=0, errors=None):
        self.index, self.status, self.event_id = index, status, event_id
        self.event_status, self.code, self.errors = event_status, code, errors

    def as_dict(self) -> dict[str, Any]:
        if self.status == self.ERROR:
            return {"index": self.index, "status": self.status, "code": self.code, "errors": self.errors}
        return {"index": self.index, "status": self.status, "id": self.event_id, "event_status": self.event_status}


class EventIn:
    """One checked event of a request, its contact not yet looked up."""

    __slots__ = (
        "index",
        "key",
        "request_hash",
        "name",
        "properties",
        "occurred_at",
        "contact_id",
        "phone",
        "create_contact",
    )

    def __init__(self, index, key, request_hash, name, properties, occurred_at, contact_id, phone, create_contact):
        self.index, self.key, self.request_hash, self.name = index, key, request_hash, name
        self.properties, self.occurred_at = properties, occurred_at
        self.contact_id, self.phone, self.create_contact = contact_id, phone, create_contact


def event_clean(data: Any, *, index: int = 0, key: str | None = None, request_hash: str = "") -> EventIn:
    """Check one event as posted; EventError naming each bad field. ``key`` comes from a header, else the body."""
    if not isinstance(data, dict):
        raise EventError({"non_field_errors": ["an event is a JSON object with contact and name"]})
    errors: dict[str, list[str]] = {}  # other fields are ignored, as elsewhere in the API
    if key is None:
        key = data.get("idempotency_key")
        if not isinstance(key, str) or not key.strip():
            errors["idempotency_key"] = ["required: a unique key per event, e.g. a UUID"]
        elif len(key.strip()) > idempotency.MAX_LENGTH or "\x00" in key:
            errors["idempotency_key"] = [f"at most {idempotency.MAX_LENGTH} characters, no NUL"]
        else:
            key = key.strip()
    contact_id, phone = None, None
    contact = data.get("contact")
    if "contact" not in data:
        errors["contact"] = ["This field is required."]
    elif isinstance(contact, bool) or not isinstance(contact, int | str):
        errors["contact"] = ["a contact id (number) or a phone (string)"]
    elif isinstance(contact, int):
        contact_id = contact
        if not 0 < contact < 2**63:
            errors["contact"] = [f"no contact with id {contact}"]
    else:
        try:
            phone = normalize_phone(contact)
        except InvalidPhone as exc:
            errors["contact"] = [str(exc)]
    name = data.get("name")
    if "name" not in data:
        errors["name"] = ["This field is required."]
    elif name is None:
        errors["name"] = ["This field may not be null."]
    elif not isinstance(name, str | int | float) or isinstance(name, bool):
        errors["name"] = ["Not a valid string."]
    else:
        name = str(name).strip()
        if not name:
            errors["name"] = ["This field may not be blank."]
        elif len(name) > 100:
            errors["name"] = ["Ensure this field has no more than 100 characters."]
        elif "\x00" in name:
            errors["name"] = ["Null characters are not allowed."]
    properties = data.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        errors["properties"] = ["must be a JSON object"]
    elif not _storable(properties):
        errors["properties"] = ["text may not contain NUL (\\u0000) characters or lone surrogates"]
    occurred_at = data.get("occurred_at")
    if occurred_at is not None:
        try:
            occurred_at = _occurred_at_field.run_validation(occurred_at)
        except drf_serializers.ValidationError as exc:
            errors["occurred_at"] = [str(message) for message in exc.detail]
    create_contact = data.get("create_contact", False)
    if not isinstance(create_contact, bool):
        errors["create_contact"] = ["true or false"]
    if errors:
        raise EventError(errors)
    return EventIn(index, key, request_hash, name, properties, occurred_at, contact_id, phone, create_contact)


def _storable(value: dict[str, Any]) -> bool:
    text = json.dumps(value, ensure_ascii=False)
    if "\\u0000" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def contact_create_for_event(phone: str, *, actor: str, key: str) -> int:
    """A contact for an event's unknown phone, opted out: an event is no consent (docs/consent.md)."""
    try:
        contact = audience_services.contact_create(
            phone=phone,
            consent_status=ConsentStatus.OPTED_OUT,
            source=ConsentSource.API,
            actor=actor or "events API",
            evidence={"created_by_event": key[:255]},
        )
    except audience_services.ContactError:  # created concurrently: that contact stands
        return Contact.objects.values_list("pk", flat=True).get(phone=phone)
    return contact.pk


def event_contact(item: EventIn, *, actor: str = "") -> Contact:
    """The contact of an event answered at once: an unknown one is a 400 naming it, unless the item creates it."""
    if item.contact_id is not None:
        contact = Contact.objects.filter(pk=item.contact_id).first()
        if contact is None:
            raise EventError({"contact": [f"no contact with id {item.contact_id}"]})
        return contact
    contact = Contact.objects.filter(phone=item.phone).first()
    if contact is not None:
        return contact
    if not item.create_contact:
        raise EventError({"contact": [f"no contact with phone {item.phone}; create_contact: true creates it"]})
    return Contact.objects.get(pk=contact_create_for_event(item.phone, actor=actor, key=item.key))


def events_store(items: list[EventIn], *, actor: str = "") -> list[Outcome]:
    """Store checked events (replays and conflicts found by their keys); one Outcome per item, by index.

    Unknown ids are errors; unknown phones are kept as ``unknown_contact`` events, or get an
    opted-out contact first when the item says ``create_contact``. Wakes a matcher after commit.
    One statement finds the contacts and inserts the events; one more reads back replays.
    """
    outcomes: dict[int, Outcome] = {}
    first_of_key: dict[str, EventIn] = {}
    for item in items:
        first_of_key.setdefault(item.key, item)  # the same key twice in one request: the first decides
    firsts = list(first_of_key.values())
    stored = _events_insert(firsts)
    creating = [item for item in firsts if stored[item.key] == _NEEDS_CONTACT]
    if creating:
        for item in creating:
            contact_create_for_event(item.phone, actor=actor, key=item.key)
        stored.update(_events_insert(creating))
    for item in firsts:
        result = stored[item.key]
        if result == _UNKNOWN_ID:
            outcomes[item.index] = _error(item.index, 400, "contact", f"no contact with id {item.contact_id}")
        elif result is not None:
            event_id, status = result
            kind = Outcome.UNKNOWN_CONTACT if status == EventStatus.UNKNOWN_CONTACT else Outcome.ACCEPTED
            outcomes[item.index] = Outcome(item.index, kind, event_id=event_id, event_status=status)
    earlier = _events_by_key([item.key for item in firsts if item.index not in outcomes])
    for item in items:
        if item.index in outcomes:
            continue
        first = earlier.get(item.key)
        if first is None:  # a later duplicate of a key this request stored, or of an item refused
            first_item = first_of_key[item.key]
            stored_outcome = outcomes[first_item.index]
            if stored_outcome.status == Outcome.ERROR:
                outcomes[item.index] = Outcome(
                    item.index, Outcome.ERROR, code=stored_outcome.code, errors=stored_outcome.errors
                )
                continue
            first = (stored_outcome.event_id, first_item.request_hash, stored_outcome.event_status)
        event_id, stored_hash, event_status = first
        try:
            idempotency.replay_check(stored_hash, item.request_hash, f"event {event_id}")
        except idempotency.IdempotencyConflict as exc:
            outcomes[item.index] = _error(item.index, 422, "idempotency_key", exc.messages[0])
            continue
        outcomes[item.index] = Outcome(item.index, Outcome.REPLAYED, event_id=event_id, event_status=event_status)
    if any(outcome.status == Outcome.ACCEPTED for outcome in outcomes.values()):
        transaction.on_commit(events_kick, robust=True)  # at once outside a transaction
    return [outcomes[item.index] for item in items]


def _error(index: int, code: int, field: str, text: str) -> Outcome:
    return Outcome(index, Outcome.ERROR, code=code, errors={field: [text]})


_UNKNOWN_ID = "unknown id"
_NEEDS_CONTACT = "needs a contact"

# Finds the contacts by id or phone and inserts the events whose keys are new, in key order (two
# requests never wait on each other's keys in a cycle), the pending ones with their row in the
# matchers' queue; one row per item: (key, contact, id, status).
_PENDING, _UNKNOWN = sql.literal(EventStatus.PENDING), sql.literal(EventStatus.UNKNOWN_CONTACT)
_INSERT_SQL = f"""
WITH s AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS s (n int, contact_id bigint, phone text, phone_hash text, name text, properties jsonb,
              occurred_at timestamptz, key text, request_hash text, create_contact bool)
), r AS (
    SELECT s.*, COALESCE(ci.id, cp.id) AS resolved
    FROM s
    LEFT JOIN audience_contact ci ON ci.id = s.contact_id
    LEFT JOIN audience_contact cp ON cp.phone = s.phone
), numbered AS (  -- ids in the request's order: the matchers answer a contact's events in id order
    SELECT r.*, nextval(%(sequence)s::regclass) AS id
    FROM r
    WHERE r.resolved IS NOT NULL OR (r.contact_id IS NULL AND NOT r.create_contact)
    ORDER BY r.n
), inserted AS (
    INSERT INTO campaigns_event (id, contact_id, contact_phone_hash, name, properties, occurred_at, received_at,
                                 idempotency_key, request_hash, status)
    SELECT r.id, r.resolved, CASE WHEN r.resolved IS NULL THEN r.phone_hash ELSE '' END, r.name,
           r.properties, COALESCE(r.occurred_at, %(now)s), %(now)s, r.key, r.request_hash,
           CASE WHEN r.resolved IS NULL THEN {_UNKNOWN} ELSE {_PENDING} END
    FROM numbered r
    ORDER BY r.key
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key, id, status
), queued AS (
    INSERT INTO campaigns_pendingevent (event_id) SELECT id FROM inserted WHERE status = {_PENDING}
)
SELECT r.key, r.contact_id, r.resolved, r.create_contact, inserted.id, inserted.status
FROM r LEFT JOIN inserted ON inserted.idempotency_key = r.key
"""


@functools.cache
def _event_id_sequence() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence('campaigns_event', 'id')")
        return cursor.fetchone()[0]


# One event for a contact given by id, the usual single request: a prepared statement (planned
# once per connection; the general statement above costs 0.7 ms to plan and 1.7 ms to run for one
# row), and no health-check query before it (config.sql.fetch_one_prepared).
_INSERT_ONE_SQL = f"""
WITH inserted AS (
    INSERT INTO campaigns_event (contact_id, contact_phone_hash, name, properties, occurred_at, received_at,
                                 idempotency_key, request_hash, status)
    SELECT c.id, '', %(name)s::text, %(properties)s::jsonb,
           COALESCE(%(occurred_at)s::timestamptz, %(now)s::timestamptz), %(now)s::timestamptz, %(key)s::text,
           %(request_hash)s::text, {_PENDING}
    FROM audience_contact c
    WHERE c.id = %(contact_id)s::bigint
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, status
), queued AS (
    INSERT INTO campaigns_pendingevent (event_id) SELECT id FROM inserted
)
SELECT id, status FROM inserted
"""
# Not inserted: an unknown contact (which wins over a used key, as in the general statement),
# else the key was used before.
_CONTACT_EXISTS_SQL = "SELECT EXISTS (SELECT 1 FROM audience_contact WHERE id = %(contact_id)s::bigint)"


def _event_insert_by_id(item: EventIn) -> dict[str, Any]:
    params = {
        "name": item.name,
        "properties": json.dumps(item.properties, separators=(",", ":")),
        "occurred_at": item.occurred_at,
        "now": timezone.now(),
        "key": item.key,
        "request_hash": item.request_hash,
        "contact_id": item.contact_id,
    }
    row = sql.fetch_one_prepared(_INSERT_ONE_SQL, params)
    if row is not None:
        return {item.key: (row[0], row[1])}
    (exists,) = sql.fetch_one_prepared(_CONTACT_EXISTS_SQL, {"contact_id": item.contact_id})
    return {item.key: None if exists else _UNKNOWN_ID}


def _events_insert(items: list[EventIn]) -> dict[str, Any]:
    """{key: (event id, status) if inserted, None if the key was used before, _UNKNOWN_ID or _NEEDS_CONTACT}."""
    if not items:
        return {}
    if len(items) == 1 and items[0].contact_id is not None:
        return _event_insert_by_id(items[0])
    now = timezone.now()
    rows = [
        {
            "n": index,
            "contact_id": item.contact_id,
            "phone": item.phone,
            "phone_hash": phone_hash(item.phone) if item.phone else "",
            "name": item.name,
            "properties": item.properties,
            "occurred_at": item.occurred_at.isoformat() if item.occurred_at else None,
            "key": item.key,
            "request_hash": item.request_hash,
            "create_contact": item.create_contact,
        }
        for index, item in enumerate(items)
    ]
    # One JSON text: psycopg quotes a long string far faster than ten arrays of a thousand items.
    params = {"sequence": _event_id_sequence(), "now": now, "rows": json.dumps(rows, separators=(",", ":"))}
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL, params)
        rows = cursor.fetchall()
    result: dict[str, Any] = {}
    for key, contact_id, resolved, create_contact, event_id, status in rows:
        if event_id is not None:
            result[key] = (event_id, status)
        elif resolved is None and contact_id is not None:
            result[key] = _UNKNOWN_ID
        elif resolved is None and create_contact:
            result[key] = _NEEDS_CONTACT
        else:
            result[key] = None
    return result


def _events_by_key(keys: list[str]) -> dict[str, tuple[int, str, str]]:
    if not keys:
        return {}
    rows = Event.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", "pk", "request_hash", "status")
    return {key: (pk, request_hash, status) for key, pk, request_hash, status in rows}
