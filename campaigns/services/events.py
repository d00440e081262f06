"""Triggered campaigns: events (the API, inbound keywords) stored, matched to campaigns and answered by runs.

An event is stored once per idempotency key (a unique column decides, so two simultaneous
requests with one key make one event). The API stores events first (``events_store``: one
statement for a request, up to 1,000 events) and workers match them a batch at a time
(``events_match``); the waiting door and inbound keywords run the same matcher over their one
event before answering (``event_record``). A campaign matches by event name (or inbound
keyword), by its property conditions on the event, and by its contact rule (the segment
language) plus its segment and topic. Each match adds one Recipient, for that event, to the
campaign's long-lived run, with the same decisions a launch snapshot takes (consent, frequency
cap, missing variables, WhatsApp window, quiet hours, validity, here counted from the event) and
a pending Message carrying the event's properties for ``{{ event.* }}``. The run's dispatcher
claims, paces and sends it like any other recipient; the run's counters move in the same
transaction as the rows. docs/events.md has the contract and why each event answers once.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import time
from collections import Counter
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone
from rest_framework import serializers as drf_serializers

from audience import services as audience_services
from audience.models import ConsentSource, ConsentStatus, Contact
from audience.phones import InvalidPhone, normalize_phone, phone_hash
from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignRun,
    CampaignStatus,
    Event,
    EventStatus,
    Recipient,
    RecipientState,
    RunStatus,
    ScheduleType,
    SkipReason,
)
from campaigns.quiet_hours import quiet_release_at
from campaigns.segments import rules
from campaigns.segments.compile import compile_rule
from campaigns.segments.rules import RuleError
from campaigns.services import arms, dispatch
from campaigns.services.segments import SegmentError, segment_definition_clean
from campaigns.services.snapshot import CAP_STATES
from config import idempotency, observe
from messaging.keywords import KEYWORDS
from messaging.models import Direction, Message
from messaging.services import send as send_service
from messaging.services.templates import template_render

logger = logging.getLogger(__name__)

R = RecipientState
KEYWORD_EVENT = "keyword"  # the name of events recorded for inbound keywords
EVENT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$")
KEYWORD_RE = re.compile(r"^[A-Z0-9]{1,32}$")
PROPERTY_RE = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")
LIVE_STATUSES = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED)
MAX_CONDITIONS = 50


class EventError(ValidationError):
    """An event was refused; message_dict names the field."""


# --- Property conditions -------------------------------------------------------------------
#
# A list of {"property": "order.total", "op": "gte", "value": 50}; all must hold. A property is a
# key of the event's properties, dotted for nested objects. Like segment rules, every condition is
# true or false: a missing property fails eq/gt/in/contains/exists and passes neq/not_in/not_exists.

ORDERING_OPS = ("gt", "gte", "lt", "lte")
PROPERTY_OPS = ("eq", "neq", "in", "not_in", "contains", "icontains", *ORDERING_OPS, "exists", "not_exists")
_MISSING = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or _is_number(value)


def conditions_clean(conditions: Any) -> list[dict[str, Any]]:
    """Validate a property-condition list; ValueError names the item and key, e.g. "[1].op: ..."."""
    if conditions in (None, ""):
        return []
    if not isinstance(conditions, list):
        raise ValueError('a list of conditions such as [{"property": "total", "op": "gte", "value": 50}]')
    if len(conditions) > MAX_CONDITIONS:
        raise ValueError(f"at most {MAX_CONDITIONS} conditions")
    return [_condition_clean(item, f"[{index}]") for index, item in enumerate(conditions)]


def _condition_clean(item: Any, at: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"{at}: a condition is an object with property, op and value")
    unknown = set(item) - {"property", "op", "value"}
    if unknown:
        raise ValueError(f"{at}: unknown key {sorted(unknown)[0]!r}")
    prop, op = item.get("property"), item.get("op")
    if not isinstance(prop, str) or not PROPERTY_RE.match(prop):
        raise ValueError(f"{at}.property: a property name such as total or order.total")
    if op not in PROPERTY_OPS:
        raise ValueError(f"{at}.op: {op!r} is not one of {', '.join(PROPERTY_OPS)}")
    if op in ("exists", "not_exists"):
        if "value" in item:
            raise ValueError(f"{at}.value: {op} takes no value")
        return {"property": prop, "op": op}
    if "value" not in item:
        raise ValueError(f"{at}.value: {op} needs a value")
    value = item["value"]
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or not all(_is_scalar(v) for v in value):
            raise ValueError(f"{at}.value: {op} needs a non-empty list of strings, numbers or booleans")
    elif op in ORDERING_OPS and not _is_number(value):
        raise ValueError(f"{at}.value: {op} compares numbers; {value!r} is not a number")
    elif op in ("contains", "icontains") and not isinstance(value, str):
        raise ValueError(f"{at}.value: {op} needs a string")
    elif not _is_scalar(value):
        raise ValueError(f"{at}.value: a string, number, boolean or null")
    return {"property": prop, "op": op, "value": value}


def _property(properties: Any, path: str) -> Any:
    value = properties
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _equal(actual: Any, expected: Any) -> bool:
    if _is_number(expected):
        return _is_number(actual) and actual == expected
    return type(actual) is type(expected) and actual == expected  # "1" is not 1, True is not 1


def condition_holds(condition: dict[str, Any], properties: dict[str, Any]) -> bool:
    op, expected = condition["op"], condition.get("value")
    actual = _property(properties, condition["property"])
    if op in ("exists", "not_exists"):
        return (actual is not _MISSING and actual is not None) == (op == "exists")
    if op in ("neq", "not_in"):
        return not condition_holds({**condition, "op": op[1:] if op == "neq" else "in"}, properties)
    if actual is _MISSING:
        return False
    if op == "eq":
        return _equal(actual, expected)
    if op == "in":
        return any(_equal(actual, item) for item in expected)
    if op in ("contains", "icontains"):
        fold = str.casefold if op == "icontains" else str
        if isinstance(actual, list):
            return any(isinstance(item, str) and fold(expected) == fold(item) for item in actual)
        return isinstance(actual, str) and fold(expected) in fold(actual)
    if not _is_number(actual):
        return False
    return {"gt": actual > expected, "gte": actual >= expected, "lt": actual < expected, "lte": actual <= expected}[op]


def conditions_hold(conditions: list[dict[str, Any]], properties: dict[str, Any]) -> bool:
    return all(condition_holds(condition, properties) for condition in conditions or [])


# --- Validating a campaign's trigger -------------------------------------------------------


def contact_rule_clean(value: Any) -> dict[str, Any] | None:
    """The canonical rule tree of a contact rule given as a JSON tree or a query string; None if empty."""
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        return segment_definition_clean(query=value).definition
    return segment_definition_clean(definition=value).definition


def keyword_normalize(text: str | None) -> str:
    """An inbound body as a keyword candidate: the whole message, trimmed, upper case, "Join!" -> "JOIN"."""
    return (text or "").strip().rstrip(".!").strip().upper()


def trigger_errors(campaign: Campaign) -> dict[str, list[str]]:
    """Errors of the trigger fields by field name; normalises them on ``campaign`` as it goes.

    The keyword is stored in upper case and the contact rule as its canonical JSON tree.
    """
    if campaign.kind != CampaignKind.TRIGGERED:
        return _no_trigger_errors(campaign)
    errors: dict[str, list[str]] = {}
    campaign.trigger_event = (campaign.trigger_event or "").strip()
    campaign.trigger_keyword = keyword_normalize(campaign.trigger_keyword)
    if bool(campaign.trigger_event) == bool(campaign.trigger_keyword):
        errors["trigger_event"] = ["a triggered campaign needs an event name or a keyword (one of them)"]
    if campaign.trigger_event and not EVENT_NAME_RE.match(campaign.trigger_event):
        errors["trigger_event"] = ["letters, digits and _ . : - only, at most 100 characters"]
    if campaign.trigger_keyword:
        errors.update(_keyword_errors(campaign))
    if campaign.schedule_type == ScheduleType.CRON:
        errors["schedule_type"] = ["a triggered campaign starts once (now or at a time) and then answers events"]
    try:
        campaign.trigger_conditions = conditions_clean(campaign.trigger_conditions)
    except ValueError as exc:
        errors["trigger_conditions"] = [str(exc)]
    try:
        campaign.trigger_contact_rule = contact_rule_clean(campaign.trigger_contact_rule)
    except SegmentError as exc:
        errors["trigger_contact_rule"] = [_segment_error_text(exc)]
    return errors


def _no_trigger_errors(campaign: Campaign) -> dict[str, list[str]]:
    errors = {}
    for name in ("trigger_event", "trigger_keyword", "trigger_conditions", "trigger_contact_rule"):
        if getattr(campaign, name) not in (None, "", [], {}):
            errors[name] = ["only a triggered campaign has a trigger"]
    return errors


def _keyword_errors(campaign: Campaign) -> dict[str, list[str]]:
    keyword = campaign.trigger_keyword
    if not KEYWORD_RE.match(keyword):
        return {"trigger_keyword": ["one word of letters and digits, at most 32"]}
    if keyword in KEYWORDS:
        return {"trigger_keyword": [f"{keyword} is a consent or help keyword; messaging answers it"]}
    other = (
        Campaign.objects.filter(trigger_keyword=keyword, status__in=LIVE_STATUSES)
        .exclude(pk=campaign.pk)
        .values_list("name", flat=True)
        .first()
    )
    if other is not None:
        return {"trigger_keyword": [f"the campaign {other!r} already answers {keyword}"]}
    return {}


def _segment_error_text(exc: SegmentError) -> str:
    detail = exc.detail  # a query error's message names its column; a tree error's its path
    return detail["message"] if "line" in detail or not detail.get("path") else f"{detail['path']}: {detail['message']}"


# --- Recording events one at a time (answered before returning) ------------------------------


def event_replay(idempotency_key: str, request_hash: str) -> Event | None:
    """The event first recorded with this key, or None; IdempotencyConflict if the request differs."""
    event = Event.objects.filter(idempotency_key=idempotency_key).first()
    if event is not None:
        idempotency.replay_check(event.request_hash, request_hash, f"event {event.pk}")
    return event


def event_record(
    *,
    contact: Contact,
    name: str,
    properties: dict[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
    idempotency_key: str,
    request_hash: str = "",
    keyword: str = "",
    now: dt.datetime | None = None,
) -> tuple[Event, bool]:
    """Store an event and match it before returning; returns (event, created). A replayed key returns the first event.

    The same matcher as the workers' (``events_match``), over this one event, in the
    transaction that stores it: the caller sees the campaigns it fired.
    """
    existing = event_replay(idempotency_key, request_hash)
    if existing is not None:
        return existing, False
    now = now or timezone.now()
    event = Event(
        contact=contact,
        name=name,
        properties=properties or {},
        occurred_at=occurred_at or now,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        status=EventStatus.PENDING,
    )
    with transaction.atomic():
        try:
            with transaction.atomic():
                event.save()
        except IntegrityError:  # the same key sent concurrently: that request's event stands
            replayed = event_replay(idempotency_key, request_hash)
            if replayed is None:
                raise
            return replayed, False
        events_match([event.pk], keyword=keyword, now=now)
    event.status, event.matched_at = EventStatus.MATCHED, now
    return event, True


# --- Storing events first (answered by the workers) -------------------------------------------
#
# A request's events are checked in Python, their contacts found in one query and the events
# inserted in one INSERT ... ON CONFLICT (idempotency_key) DO NOTHING: the keys it did not insert
# are replays (or, with another body, conflicts), read back in one more query. Once the
# transaction commits the events are durable and a matcher is woken (``events_kick``).

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
# requests never wait on each other's keys in a cycle); one row per item: (key, contact, id, status).
_INSERT_SQL = """
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
           CASE WHEN r.resolved IS NULL THEN 'unknown_contact' ELSE 'pending' END
    FROM numbered r
    ORDER BY r.key
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key, id, status
)
SELECT r.key, r.contact_id, r.resolved, r.create_contact, inserted.id, inserted.status
FROM r LEFT JOIN inserted ON inserted.idempotency_key = r.key
"""


@functools.cache
def _event_id_sequence() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence('campaigns_event', 'id')")
        return cursor.fetchone()[0]


def _events_insert(items: list[EventIn]) -> dict[str, Any]:
    """{key: (event id, status) if inserted, None if the key was used before, _UNKNOWN_ID or _NEEDS_CONTACT}."""
    if not items:
        return {}
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


KICK_KEY = "events:match:kick"
KICK_TTL_MS = 5_000  # a kick whose task was lost stops holding the next one back after this
# A process that kicked this recently skips the round trip: the matcher it woke (or found
# queued) looks again until MATCHER_LINGER seconds pass with nothing pending, longer than this.
KICK_QUIET = 0.1
MATCHER_LINGER = 1.0
_last_kick = 0.0


def events_kick() -> None:
    """Wake a matcher unless one is already queued and has not started looking (one Redis round trip).

    The matcher deletes the key before it looks, so an event committed before this call is
    either seen by a matcher already queued or wakes a new one; one committed within KICK_QUIET
    of this process's last kick is seen by the matcher lingering after that kick. Beat's sweep
    catches what a lost task or an unreachable Redis left behind.
    """
    global _last_kick
    from campaigns.tasks import events_match_task

    now = time.monotonic()
    if now - _last_kick < KICK_QUIET:
        return
    _last_kick = now
    try:
        if observe.redis_client().set(KICK_KEY, 1, nx=True, px=KICK_TTL_MS):
            events_match_task.delay()
    except Exception as exc:  # noqa: BLE001 - the event is stored; the sweep matches it
        logger.warning("could not wake an event matcher (the sweep will match the events): %s", exc)


def events_linger(seconds: float = MATCHER_LINGER, poll: float = 0.05) -> bool:
    """Watch for pending events until ``seconds`` pass with none; True as soon as some are there."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if Event.objects.filter(status=EventStatus.PENDING).exists():
            return True
        time.sleep(poll)
    return False


def events_kick_clear() -> None:
    """A matcher starting to look: the next stored event wakes another."""
    try:
        observe.redis_client().delete(KICK_KEY)
    except Exception as exc:  # noqa: BLE001
        logger.warning("could not clear the matcher kick: %s", exc)


# --- Matching stored events, a batch at a time --------------------------------------------
#
# Workers claim pending events (FOR UPDATE SKIP LOCKED, so matchers never share one), match the
# batch against the running triggered campaigns with a few statements per campaign, and mark
# the events matched in the same transaction. A crash rolls all of it back and leaves the events
# pending for the next matcher; a committed batch is never claimed again. (event, campaign) is
# unique in the matched-campaigns table and (event, run) among recipients: the database refuses
# a second answer even to a matcher that got it wrong.

MATCH_BATCH = 1000


def events_match(
    event_ids: list[int] | None = None,
    *,
    limit: int = MATCH_BATCH,
    keyword: str = "",
    now: dt.datetime | None = None,
) -> list[int]:
    """Match pending events (these ids, else the oldest ``limit``); returns the ids this call matched.

    Events another matcher holds are skipped, not waited for.
    """
    now = now or timezone.now()
    where, params = "status = 'pending'", []
    if event_ids is not None:
        where += " AND id = ANY(%s::bigint[])"
        params.append(_id_array(event_ids))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"""SELECT id, contact_id, name, properties, occurred_at FROM campaigns_event
                    WHERE {where} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""",
                [*params, limit],
            )
            batch = [ClaimedEvent(*row) for row in cursor.fetchall()]
        if not batch:
            return []
        _batch_answer(batch, keyword=keyword, now=now)
        ids = [event.pk for event in batch]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE campaigns_event SET status = 'matched', matched_at = %s WHERE id = ANY(%s::bigint[])",
                [now, _id_array(ids)],
            )
    return ids


class ClaimedEvent:
    """A pending event as a matcher holds it: what matching reads, without a model instance each."""

    __slots__ = ("pk", "contact_id", "name", "properties", "occurred_at")

    def __init__(self, pk, contact_id, name, properties, occurred_at):
        self.pk, self.contact_id, self.name = pk, contact_id, name
        self.properties = properties if isinstance(properties, dict) else json.loads(properties or "{}")
        self.occurred_at = occurred_at


def _id_array(ids) -> str:
    """Ids as one array literal: psycopg quotes one string far faster than a list of thousands."""
    return "{" + ",".join(str(int(pk)) for pk in ids) + "}"


def events_match_pending(
    *, limit: int = MATCH_BATCH, seconds: float = 20.0, wake_helper: bool = True
) -> tuple[int, bool]:
    """Match batch after batch until none is left or ``seconds`` passed; (matched, more may be left)."""
    deadline = time.monotonic() + seconds
    total = 0
    while True:
        matched = len(events_match(limit=limit))
        total += matched
        if matched < limit:
            return total, False
        if wake_helper:
            helper_wake()  # a backlog: a second matcher shares it
        if time.monotonic() >= deadline:
            return total, True


HELPER_KEY = "events:match:helper"


def helper_wake() -> None:
    """Queue a second matcher unless one was woken in the last 5 s and is still working."""
    from campaigns.tasks import events_match_helper

    try:
        if observe.redis_client().set(HELPER_KEY, 1, nx=True, px=KICK_TTL_MS):
            events_match_helper.delay()
    except Exception as exc:  # noqa: BLE001 - the first matcher carries on alone
        logger.warning("could not wake a second event matcher: %s", exc)


def helper_done() -> None:
    try:
        observe.redis_client().delete(HELPER_KEY)
    except Exception as exc:  # noqa: BLE001 - the key expires by itself
        logger.warning("could not clear the second matcher's key: %s", exc)


def _batch_answer(batch: list[ClaimedEvent], *, keyword: str, now: dt.datetime) -> None:
    """Every (event, campaign) match of the batch, answered as one event after another would be."""
    live = Campaign.objects.filter(kind=CampaignKind.TRIGGERED, status=CampaignStatus.RUNNING)
    if keyword:
        live = live.filter(trigger_keyword=keyword)
    else:
        live = live.filter(trigger_event__in={event.name for event in batch})
    campaigns = list(live.select_related("template", "sender", "segment", "topic").order_by("pk"))
    # Name and property conditions: Python over the batch, no query.
    candidates = {
        campaign.pk: [
            event
            for event in batch
            if event.contact_id is not None
            and (keyword or event.name == campaign.trigger_event)
            and conditions_hold(campaign.trigger_conditions, event.properties)
        ]
        for campaign in campaigns
    }
    campaigns = [campaign for campaign in campaigns if candidates[campaign.pk]]
    if not campaigns:
        return
    contact_ids = sorted({event.contact_id for events in candidates.values() for event in events})
    # One batch at a time per contact (ids in order, so two matchers never deadlock): the
    # frequency cap counts what an earlier batch queued.
    contacts = {
        contact.pk: contact
        for contact in Contact.objects.select_for_update(no_key=True).filter(pk__in=contact_ids).order_by("pk")
    }
    allowed: dict[int, set[int]] = {}
    for campaign in campaigns:
        ids = sorted({event.contact_id for event in candidates[campaign.pk]})
        if keyword and campaign.topic_id:  # the keyword asked for the topic, so its condition holds
            audience_services.contacts_add_topic(ids, campaign.topic)
        allowed[campaign.pk] = _contacts_matching(campaign, ids, now=now)
    candidate_ids = {pk: {event.pk for event in events} for pk, events in candidates.items()}
    pairs = [
        (event, campaign)
        for event in batch
        for campaign in campaigns
        if event.pk in candidate_ids[campaign.pk] and event.contact_id in allowed[campaign.pk]
    ]
    pairs = _matches_claim(pairs)
    if not pairs:
        return
    _answers_add(pairs, contacts, now=now)


def _contacts_matching(campaign: Campaign, contact_ids: list[int], *, now: dt.datetime) -> set[int]:
    """Those of the contacts the campaign's contact rule, segment and topic hold for (one query, or none)."""
    conditions = Q()
    try:
        if campaign.trigger_contact_rule:
            conditions &= compile_rule(rules.validate(campaign.trigger_contact_rule), now=now)
        if campaign.segment_id:
            conditions &= compile_rule(rules.validate(campaign.segment.definition), now=now)
    except RuleError as exc:  # stored before a rule change made it invalid: never "everyone"
        logger.warning("campaign %s: contact rule no longer valid, not matched: %s", campaign.pk, exc)
        return set()
    if campaign.topic_id:
        conditions &= Q(topics__pk=campaign.topic_id)
    if not conditions:
        return set(contact_ids)
    return set(Contact.objects.filter(conditions, pk__in=contact_ids).values_list("pk", flat=True).distinct())


def _matches_claim(pairs: list[tuple[ClaimedEvent, Campaign]]) -> list[tuple[ClaimedEvent, Campaign]]:
    """Record the (event, campaign) matches; returns those not recorded before (the unique pair decides)."""
    if not pairs:
        return []
    table = Event.matched_campaigns.through._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {table} (event_id, campaign_id)
                SELECT * FROM unnest(%s::bigint[], %s::bigint[])
                ON CONFLICT (event_id, campaign_id) DO NOTHING
                RETURNING event_id, campaign_id""",
            [[event.pk for event, _ in pairs], [campaign.pk for _, campaign in pairs]],
        )
        fresh = set(cursor.fetchall())
    return [(event, campaign) for event, campaign in pairs if (event.pk, campaign.pk) in fresh]


# --- Answering: recipients in the campaigns' runs ------------------------------------------


def trigger_run(campaign: Campaign, *, lock: bool = False) -> CampaignRun | None:
    """The open (running or paused) run of a triggered campaign."""
    runs = CampaignRun.objects.filter(campaign=campaign, status__in=[RunStatus.RUNNING, RunStatus.PAUSED])
    if lock:
        runs = runs.select_for_update()
    return runs.order_by("-started_at", "-id").first()


def _answers_add(pairs: list[tuple[ClaimedEvent, Campaign]], contacts: dict[int, Contact], *, now: dt.datetime) -> None:
    """One recipient per match in its campaign's run, with the launch snapshot's decisions.

    Decided in event order, then campaign order, as if the events had come one at a time: an
    earlier answer to a contact counts against the frequency cap of a later one. Each run row
    is locked first, so a cancel either sees these recipients (and skips them) or comes after.
    """
    campaigns = {campaign.pk: campaign for _, campaign in pairs}
    runs = {pk: trigger_run(campaign, lock=True) for pk, campaign in campaigns.items()}
    for pk, run in runs.items():
        if run is None:
            logger.warning("triggered campaign %s has no open run; its events are not answered", pk)
    pairs = [(event, campaign) for event, campaign in pairs if runs[campaign.pk] is not None]
    sender_errors = {pk: _sender_error(campaign) for pk, campaign in campaigns.items()}
    recent = _recent_counts(pairs)
    answer_arms = arms.answers_arms(pairs)
    added: Counter[int] = Counter()
    rows: dict[int, list[tuple[Recipient, ClaimedEvent]]] = {}
    for event, campaign in pairs:
        contact = contacts.get(event.contact_id)
        if contact is None:  # deleted since the event was stored (its events went with it)
            continue
        window = campaign.frequency_window if campaign.frequency_cap else None
        capped = bool(window) and recent[window][contact.pk] + added[contact.pk] >= campaign.frequency_cap
        state, reason, detail, release_at = recipient_decide(campaign, event, contact, now, capped=capped)
        if state in (R.PENDING, R.HELD) and sender_errors[campaign.pk]:  # e.g. the sender was deactivated
            state, reason, detail, release_at = R.FAILED, "sender", sender_errors[campaign.pk], None
        arm = answer_arms.get((campaign.pk, contact.pk))
        state, reason, detail, release_at = arms.decision_for_arm((state, reason, detail, release_at), arm)
        if state in CAP_STATES:
            added[contact.pk] += 1
        recipient = Recipient(
            run=runs[campaign.pk],
            contact_id=contact.pk,
            event_id=event.pk,
            arm=arm,
            state=state,
            reason=reason,
            detail=detail,
            release_at=release_at,
        )
        rows.setdefault(campaign.pk, []).append((recipient, event))
    for pk, answers in rows.items():
        _run_answers_insert(campaigns[pk], runs[pk], answers)


def _sender_error(campaign: Campaign) -> str:
    try:
        send_service.sender_for_template(campaign.template, campaign.sender)
    except send_service.MessageRequestError as exc:
        return "; ".join(exc.messages)[:255]
    return ""


def _recent_counts(pairs: list[tuple[ClaimedEvent, Campaign]]) -> dict[dt.timedelta, Counter[int]]:
    """For each frequency window among the campaigns: the contacts' capped-state recipients within it."""
    windows: dict[dt.timedelta, set[int]] = {}
    for event, campaign in pairs:
        if campaign.frequency_cap and campaign.frequency_window:
            windows.setdefault(campaign.frequency_window, set()).add(event.contact_id)
    now = timezone.now()
    counts: dict[dt.timedelta, Counter[int]] = {}
    for window, contact_ids in windows.items():
        rows = (
            Recipient.objects.filter(contact_id__in=contact_ids, state__in=CAP_STATES, created_at__gt=now - window)
            .values_list("contact_id")
            .annotate(count=Count("id"))
        )
        counts[window] = Counter(dict(rows))
    return counts


def _run_answers_insert(campaign: Campaign, run: CampaignRun, answers: list[tuple[Recipient, ClaimedEvent]]) -> None:
    """Insert a run's new recipients, their pending messages (one INSERT each) and its counters (one UPDATE)."""
    recipients = Recipient.objects.bulk_create([recipient for recipient, _ in answers])  # ids set on each
    sending = [(recipient, event) for recipient, event in answers if recipient.state in (R.PENDING, R.HELD)]
    if sending:
        message_ids = arms.answers_messages_create(campaign, sending, ContentType.objects.get_for_model(Recipient))
        with connection.cursor() as cursor:
            cursor.execute(
                """UPDATE campaigns_recipient r SET message_id = m.message_id
                   FROM unnest(%s::bigint[], %s::bigint[]) AS m (recipient_id, message_id)
                   WHERE r.id = m.recipient_id""",
                [list(message_ids), list(message_ids.values())],
            )
    _counters_add(run.pk, Counter((recipient.state, recipient.reason) for recipient in recipients))
    arms.answers_sizes_add(run.pk, recipients)
    if run.status == RunStatus.RUNNING and any(recipient.state == R.PENDING for recipient in recipients):
        dispatch.dispatch_start(run.pk, chains=1)  # after commit


def recipient_decide(
    campaign: Campaign, event: ClaimedEvent, contact: Contact, now: dt.datetime, *, capped: bool
) -> tuple[str, str, str, dt.datetime | None]:
    """(state, reason, detail, release_at): the snapshot's decisions for one contact and event."""
    if contact.consent_status != ConsentStatus.OPTED_IN:
        return R.SKIPPED, SkipReason.OPTED_OUT, "", None
    if capped:
        return R.SKIPPED, SkipReason.CAPPED, "", None
    rendered = template_render(campaign.template, contact=contact, context=event.properties)
    if not rendered.ok:
        return R.SKIPPED, SkipReason.MISSING_VARIABLE, rendered.skip_reason[:255], None
    free_form = not campaign.template.content_sid
    if campaign.sender.channel == "whatsapp" and free_form and not send_service.in_whatsapp_window(contact, now):
        return R.SKIPPED, SkipReason.OUTSIDE_WINDOW, "", None
    release_at = None
    if campaign.quiet_start is not None and campaign.quiet_end is not None:
        zone = contact.timezone or settings.DEFAULT_TIMEZONE
        release_at = quiet_release_at(now, zone, campaign.quiet_start, campaign.quiet_end)
    if campaign.validity:
        expires_at = min(event.occurred_at, now) + campaign.validity
        if (release_at or now) >= expires_at:
            return R.SKIPPED, SkipReason.EXPIRED, "", None
    return (R.HELD, "", "", release_at) if release_at else (R.PENDING, "", "", None)


def _counters_add(run_id: int, counts: Counter[tuple[str, str]]) -> None:
    """More recipients by (state, reason): total, each state's counter and the skip reasons in one UPDATE."""
    states: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for (state, reason), count in counts.items():
        assert state in ("pending", "held", "sending", "sent", "skipped", "failed")
        states[state] += count
        if state == R.SKIPPED:
            reasons[reason] += count
    if not states:
        return
    sets, params = ["total = total + %s"], [sum(states.values())]
    for state, count in sorted(states.items()):
        sets.append(f"{state} = {state} + %s")
        params.append(count)
    if reasons:
        sets.append(
            "skipped_by_reason = COALESCE(skipped_by_reason, '{}'::jsonb) || ("
            " SELECT jsonb_object_agg(r.reason, COALESCE((skipped_by_reason ->> r.reason)::int, 0) + r.n)"
            " FROM unnest(%s::text[], %s::int[]) AS r (reason, n))"
        )
        params += [list(reasons), list(reasons.values())]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE campaigns_campaignrun SET {', '.join(sets)} WHERE id = %s", [*params, run_id])


# --- Inbound keywords ----------------------------------------------------------------------


def keyword_trigger(message_id: int, keyword: str | None = None) -> Event | None:
    """Answer an inbound message that is a campaign's keyword; STOP, START and HELP never are.

    Called by the inbound_message_received receiver after the message committed. The message's
    sid is the event's idempotency key, so the same inbound message never answers twice.
    """
    if keyword:  # a consent or help keyword: messaging has handled it
        return None
    message = Message.objects.select_related("contact").filter(pk=message_id, direction=Direction.INBOUND).first()
    if message is None or message.contact is None:
        return None
    word = keyword_normalize(message.body)
    if not KEYWORD_RE.match(word) or word in KEYWORDS:
        return None
    live = Campaign.objects.filter(kind=CampaignKind.TRIGGERED, status=CampaignStatus.RUNNING, trigger_keyword=word)
    if not live.exists():
        return None
    event, _ = event_record(
        contact=message.contact,
        name=KEYWORD_EVENT,
        properties={"keyword": word},
        occurred_at=message.received_at or message.created_at,
        idempotency_key=f"inbound:{message.provider_sid or message.pk}",
        keyword=word,
    )
    return event
