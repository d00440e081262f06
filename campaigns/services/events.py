"""Triggered campaigns: events (the API, inbound keywords) matched to campaigns and answered by runs.

An event is stored once per idempotency key (a unique column decides, so two simultaneous
requests with one key make one event), then matched against the running triggered campaigns:
by event name (or inbound keyword), by the campaign's property conditions on the event, and by
its contact rule (the segment language) plus its segment and topic. Each match adds one
Recipient, for that event, to the campaign's long-lived run, with the same decisions a launch
snapshot takes (consent, frequency cap, missing variables, WhatsApp window, quiet hours,
validity, here counted from the event) and a pending Message carrying the event's properties
for ``{{ event.* }}``. The run's dispatcher claims, paces and sends it like any other
recipient; the run's counters move in the same transaction as the row.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from audience import services as audience_services
from audience.models import ConsentStatus, Contact
from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignRun,
    CampaignStatus,
    Event,
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
from campaigns.services import dispatch
from campaigns.services.segments import SegmentError, segment_definition_clean
from campaigns.services.snapshot import CAP_STATES
from config import idempotency
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


# --- Recording events ----------------------------------------------------------------------


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
    """Store an event and answer it; returns (event, created). A replayed key returns the first event."""
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
        # One event at a time per contact: the frequency cap counts what the previous one queued.
        contact = Contact.objects.select_for_update(no_key=True).get(pk=contact.pk)
        matched = campaigns_matching(event, contact, keyword=keyword, now=now)
        for campaign in matched:
            recipient_add(campaign, event, contact, now=now)
        event.matched_campaigns.add(*matched)
    return event, True


def campaigns_matching(event: Event, contact: Contact, *, keyword: str = "", now: dt.datetime) -> list[Campaign]:
    """The running triggered campaigns this event fires, in id order.

    A keyword campaign first adds its topic to the contact (the keyword asked for it), so its
    topic condition then holds.
    """
    live = Campaign.objects.filter(kind=CampaignKind.TRIGGERED, status=CampaignStatus.RUNNING)
    live = live.filter(trigger_keyword=keyword) if keyword else live.filter(trigger_event=event.name)
    matched = []
    for campaign in live.select_related("template", "sender", "segment").order_by("pk"):
        if not conditions_hold(campaign.trigger_conditions, event.properties):
            continue
        if keyword and campaign.topic_id:
            audience_services.contacts_add_topic([contact.pk], campaign.topic)
        if contact_matches(campaign, contact, now=now):
            matched.append(campaign)
    return matched


def contact_matches(campaign: Campaign, contact: Contact, *, now: dt.datetime) -> bool:
    """The contact rule, segment and topic of the campaign hold for the contact (one query, or none)."""
    conditions = Q()
    try:
        if campaign.trigger_contact_rule:
            conditions &= compile_rule(rules.validate(campaign.trigger_contact_rule), now=now)
        if campaign.segment_id:
            conditions &= compile_rule(rules.validate(campaign.segment.definition), now=now)
    except RuleError as exc:  # stored before a rule change made it invalid: never "everyone"
        logger.warning("campaign %s: contact rule no longer valid, not matched: %s", campaign.pk, exc)
        return False
    if campaign.topic_id:
        conditions &= Q(topics__pk=campaign.topic_id)
    if not conditions:
        return True
    return Contact.objects.filter(conditions, pk=contact.pk).exists()


# --- Answering: a recipient in the campaign's run ------------------------------------------


def trigger_run(campaign: Campaign, *, lock: bool = False) -> CampaignRun | None:
    """The open (running or paused) run of a triggered campaign."""
    runs = CampaignRun.objects.filter(campaign=campaign, status__in=[RunStatus.RUNNING, RunStatus.PAUSED])
    if lock:
        runs = runs.select_for_update()
    return runs.order_by("-started_at", "-id").first()


def recipient_add(campaign: Campaign, event: Event, contact: Contact, *, now: dt.datetime) -> Recipient | None:
    """Queue one recipient for (event, campaign) in the campaign's run, counters included.

    The run row is locked first, so a cancel either sees this recipient (and skips it) or
    comes after and finds nothing new.
    """
    run = trigger_run(campaign, lock=True)
    if run is None:
        logger.warning("triggered campaign %s has no open run; event %s not answered", campaign.pk, event.pk)
        return None
    state, reason, detail, release_at = recipient_decide(campaign, event, contact, now)
    recipient = Recipient.objects.create(
        run=run, contact=contact, event=event, state=state, reason=reason, detail=detail, release_at=release_at
    )
    if state in (R.PENDING, R.HELD):
        _message_attach(campaign, event, contact, recipient)
    _counters_add(run.pk, recipient.state, recipient.reason)
    if recipient.state == R.PENDING and run.status == RunStatus.RUNNING:
        dispatch.dispatch_start(run.pk, chains=1)  # after commit
    return recipient


def recipient_decide(
    campaign: Campaign, event: Event, contact: Contact, now: dt.datetime
) -> tuple[str, str, str, dt.datetime | None]:
    """(state, reason, detail, release_at): the snapshot's decisions for one contact and event."""
    if contact.consent_status != ConsentStatus.OPTED_IN:
        return R.SKIPPED, SkipReason.OPTED_OUT, "", None
    if _capped(campaign, contact, now):
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


def _capped(campaign: Campaign, contact: Contact, now: dt.datetime) -> bool:
    if not campaign.frequency_cap or not campaign.frequency_window:
        return False
    recent = Recipient.objects.filter(
        contact=contact, state__in=CAP_STATES, created_at__gt=now - campaign.frequency_window
    )
    return recent.count() >= campaign.frequency_cap


def _message_attach(campaign: Campaign, event: Event, contact: Contact, recipient: Recipient) -> None:
    """The recipient's pending Message, carrying the event's properties for {{ event.* }}."""
    try:
        message, _ = send_service.message_create(
            contact=contact,
            template=campaign.template,
            sender=campaign.sender,
            context=event.properties,
            source=recipient,
            enqueue=False,  # the run's dispatcher sends it, paced
        )
    except send_service.MessageRequestError as exc:  # e.g. the sender was deactivated
        recipient.state, recipient.reason = R.FAILED, "sender"
        recipient.detail, recipient.release_at = "; ".join(exc.messages)[:255], None
        recipient.save(update_fields=["state", "reason", "detail", "release_at"])
        return
    recipient.message = message
    recipient.save(update_fields=["message"])


def _counters_add(run_id: int, state: str, reason: str) -> None:
    """One more recipient in ``state``: total and that counter (and the skip reason) in one UPDATE."""
    assert state in ("pending", "held", "sending", "sent", "skipped", "failed")
    sql = f"UPDATE campaigns_campaignrun SET total = total + 1, {state} = {state} + 1"
    params: list[Any] = []
    if state == R.SKIPPED:
        sql += (
            ", skipped_by_reason = COALESCE(skipped_by_reason, '{}'::jsonb)"
            " || jsonb_build_object(%s::text, COALESCE((skipped_by_reason ->> %s)::int, 0) + 1)"
        )
        params += [reason, reason]
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} WHERE id = %s", [*params, run_id])


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
