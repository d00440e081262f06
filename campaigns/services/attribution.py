"""Conversions: a campaign's goal events attributed, exactly once, to the message or click that earned them.

A campaign names a goal (``goal_event``, optional ``goal_conditions`` in the events API's
condition language, checked by the events pipeline's own matcher), a window and a model:

- ``last_message``: the latest message of the campaign the contact received (sent or delivered)
  no longer than the window before the event occurred;
- ``last_click``: the latest click on one of the campaign's tracked links to the contact within
  the window.

``conversions_attribute`` (beat, every 10 s) looks at stored goal events not looked at yet
(``AttributionCheck``), whatever their age, a few seconds after they arrive so that the clicks
before them are drained. Each goal name keeps a horizon (``AttributionHorizon``): every event of
that name received before it has been looked at, so a sweep reads from a little before it, and
events left while the beat or the workers were down are read by the next sweeps, oldest first.
An event whose contact several campaigns reached goes to the latest touch among them. The unique
``event_id`` of both tables makes it exactly-once: a replayed event is the same row, and two
sweeps at once insert it once. An event's ``properties.value`` (a number) and
``properties.currency`` (ISO 4217) are its revenue. ``touch_latest`` is the one query behind it,
for callers that group conversions otherwise (experiment arms group them by their recipients).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import AttributionHorizon, AttributionModel, Campaign, Recipient, SkipReason
from campaigns.services.arms import CONTROL_ARM
from campaigns.services.events import conditions_clean, conditions_hold
from config.sql import literal
from messaging.models import MessageStatus

SETTLE = timedelta(seconds=5)  # the click stream is drained every 2 s
# An event is stored by one short statement: one received this long before a sweep has committed by
# then, so a sweep reads each name's events from this long before its horizon.
HORIZON_SLACK = timedelta(minutes=2)
MAX_WINDOW = timedelta(days=90)
MAX_LINK_PARAMS = 20
BATCH = 1000

# Per goal name, the events not looked at yet from a little before its horizon, oldest received first;
# each name streams its (name, received_at) index and stops at ``limit`` unchecked events.
_EVENTS_SQL = """
SELECT e.id, e.contact_id, e.name, e.properties, e.occurred_at, e.received_at
FROM unnest(%(names)s::text[], %(since)s::timestamptz[]) AS g(name, since)
CROSS JOIN LATERAL (
    SELECT e.id, e.contact_id, e.name, e.properties, e.occurred_at, e.received_at FROM campaigns_event e
    WHERE e.name = g.name AND e.received_at >= COALESCE(g.since, '-infinity') AND e.received_at <= %(until)s
      AND NOT EXISTS (SELECT 1 FROM campaigns_attributioncheck c WHERE c.event_id = e.id)
    ORDER BY e.received_at LIMIT %(limit)s
) e
ORDER BY e.received_at, e.id LIMIT %(limit)s
"""
_HORIZON_SQL = """
INSERT INTO campaigns_attributionhorizon (event_name, checked_until)
SELECT name, %(until)s FROM unnest(%(names)s::text[]) AS name
ON CONFLICT (event_name) DO UPDATE
SET checked_until = GREATEST(campaigns_attributionhorizon.checked_until, EXCLUDED.checked_until)
"""

# For each (contact, campaign, event time, window, model): the campaign's latest touch of the contact.
# A message counts as a touch once it left: sent, delivered or read.
TOUCH_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ)
_TOUCH_SQL = f"""
SELECT p.i, t.recipient_id, t.run_id, t.message_id, t.at
FROM unnest(%(i)s::int[], %(contacts)s::bigint[], %(campaigns)s::bigint[], %(ats)s::timestamptz[],
            %(windows)s::float8[], %(models)s::text[]) AS p(i, contact_id, campaign_id, at, window_s, model)
CROSS JOIN LATERAL (
    SELECT * FROM (
        SELECT r.id AS recipient_id, r.run_id, m.id AS message_id, COALESCE(m.delivered_at, m.sent_at) AS at
        FROM campaigns_recipient r
        JOIN campaigns_campaignrun cr ON cr.id = r.run_id AND cr.campaign_id = p.campaign_id
        JOIN messaging_message m ON m.id = r.message_id
        WHERE p.model = {literal(AttributionModel.LAST_MESSAGE)} AND r.contact_id = p.contact_id
          AND m.status IN ({", ".join(literal(status) for status in TOUCH_STATUSES)})
          AND COALESCE(m.delivered_at, m.sent_at) BETWEEN p.at - make_interval(secs => p.window_s) AND p.at
        UNION ALL
        SELECT r.id, r.run_id, m.id, k.clicked_at
        FROM campaigns_recipient r
        JOIN campaigns_campaignrun cr ON cr.id = r.run_id AND cr.campaign_id = p.campaign_id
        JOIN messaging_message m ON m.id = r.message_id
        JOIN messaging_link l ON l.message_id = m.id
        JOIN messaging_linkclick k ON k.link_id = l.id
        WHERE p.model = {literal(AttributionModel.LAST_CLICK)} AND r.contact_id = p.contact_id
          AND k.clicked_at BETWEEN p.at - make_interval(secs => p.window_s) AND p.at
        UNION ALL
        -- The control group gets nothing but is measured: held out at the snapshot, under either model.
        SELECT r.id, r.run_id, NULL::bigint, r.created_at
        FROM campaigns_recipient r
        JOIN campaigns_campaignrun cr ON cr.id = r.run_id AND cr.campaign_id = p.campaign_id
        WHERE r.contact_id = p.contact_id AND r.arm = %(control_arm)s AND r.reason = %(control_reason)s
          AND r.created_at BETWEEN p.at - make_interval(secs => p.window_s) AND p.at
    ) touches ORDER BY at DESC, message_id DESC NULLS LAST LIMIT 1
) t
"""


@dataclass(frozen=True)
class Touch:
    campaign_id: int
    model: str
    recipient_id: int
    run_id: int
    message_id: int | None  # None: a control-group recipient, measured without a message
    at: datetime


# --- Validating a campaign's goal and link parameters ---------------------------------------


def goal_errors(campaign: Campaign) -> dict[str, list[str]]:
    """Errors of the goal and link-parameter fields by field name; normalises them on ``campaign``."""
    errors: dict[str, list[str]] = {}
    campaign.goal_event = (campaign.goal_event or "").strip()
    try:
        campaign.goal_conditions = conditions_clean(campaign.goal_conditions)
    except ValueError as exc:
        errors["goal_conditions"] = [str(exc)]
    if campaign.goal_conditions and not campaign.goal_event:
        errors["goal_event"] = ["goal conditions need a goal event"]
    window = campaign.goal_window
    if window is None or window <= timedelta(0) or window > MAX_WINDOW:
        errors["goal_window"] = [f"an attribution window between a second and {MAX_WINDOW.days} days"]
    if campaign.goal_model not in AttributionModel.values:
        errors["goal_model"] = [f"one of {', '.join(AttributionModel.values)}"]
    if problem := _link_params_problem(campaign.link_params):
        errors["link_params"] = [problem]
    else:
        campaign.link_params = {str(k): str(v) for k, v in (campaign.link_params or {}).items()}
    return errors


def _link_params_problem(params: Any) -> str:
    if params in (None, ""):
        return ""
    if not isinstance(params, Mapping):
        return 'an object of query parameters such as {"utm_source": "sms", "utm_campaign": "spring"}'
    if len(params) > MAX_LINK_PARAMS:
        return f"at most {MAX_LINK_PARAMS} parameters"
    for name, value in params.items():
        if not str(name).strip() or not isinstance(value, str | int | float) or isinstance(value, bool):
            return f"{name!r}: a parameter has a name and a text or number value"
    return ""


def recipients_link_params(recipient_ids: list[int]) -> dict[int, Mapping[str, str]]:
    """The parameters messaging adds to each recipient's links: its campaign's ``link_params``."""
    rows = Recipient.objects.filter(pk__in=recipient_ids).values_list("pk", "run__campaign__link_params")
    return {pk: params or {} for pk, params in rows}


# --- Attribution ----------------------------------------------------------------------------


def touch_latest(pairs: list[tuple[int, int, datetime, timedelta, str]]) -> dict[int, Touch]:
    """For each (contact, campaign, event time, window, model), by index: the campaign's latest touch."""
    if not pairs:
        return {}
    params = {
        "i": list(range(len(pairs))),
        "contacts": [pair[0] for pair in pairs],
        "campaigns": [pair[1] for pair in pairs],
        "ats": [pair[2] for pair in pairs],
        "windows": [pair[3].total_seconds() for pair in pairs],
        "models": [str(pair[4]) for pair in pairs],
        "control_arm": CONTROL_ARM,
        "control_reason": SkipReason.CONTROL.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(_TOUCH_SQL, params)
        rows = cursor.fetchall()
    return {i: Touch(pairs[i][1], pairs[i][4], rec, run, msg, at) for i, rec, run, msg, at in rows}


def _revenue(properties: Any) -> tuple[Decimal | None, str]:
    if not isinstance(properties, dict):
        return None, ""
    value, currency = properties.get("value"), properties.get("currency")
    amount = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            amount = Decimal(str(value)).quantize(Decimal("0.0001"))
        except InvalidOperation:
            amount = None
        if amount is not None and (not amount.is_finite() or abs(amount) >= 10**10):
            amount = None
    code = currency.strip().upper() if isinstance(currency, str) and len(currency.strip()) == 3 else ""
    return amount, code


def conversions_attribute(*, now: datetime | None = None, limit: int = BATCH) -> int:
    """Attribute the goal events not looked at yet; returns how many were attributed. Safe to run twice."""
    now = now or timezone.now()
    goals = list(
        Campaign.objects.exclude(goal_event="").values_list(
            "pk", "goal_event", "goal_conditions", "goal_window", "goal_model"
        )
    )
    if not goals:
        return 0
    names = sorted({goal[1] for goal in goals})
    events = _events_unchecked(names, now - SETTLE, limit)
    pairs, owners = [], []
    for event_id, contact_id, name, properties, occurred_at, _ in events:
        for campaign_id, goal_event, conditions, window, model in goals:
            if contact_id and goal_event == name and conditions_hold(conditions, properties or {}):
                pairs.append((contact_id, campaign_id, occurred_at, window, model))
                owners.append(event_id)
    touches = touch_latest(pairs)
    best: dict[int, Touch] = {}
    for index, touch in touches.items():
        event_id = owners[index]
        known = best.get(event_id)
        if known is None or (touch.at, touch.message_id or 0) > (known.at, known.message_id or 0):
            best[event_id] = touch
    attributed = _record(events, best)
    # A short batch read every unchecked event up to ``until``; a full one, every one received
    # before its last (later ones with the same time are read again from the slack).
    until = now - SETTLE if len(events) < limit else events[-1][5]
    with connection.cursor() as cursor:
        cursor.execute(_HORIZON_SQL, {"names": names, "until": until})
    return attributed


def _events_unchecked(names: list[str], until: datetime, limit: int) -> list[tuple]:
    """Goal events not looked at yet, received up to ``until``: (id, contact, name, properties, occurred, received)."""
    horizons = dict(AttributionHorizon.objects.filter(event_name__in=names).values_list("event_name", "checked_until"))
    since = [horizons[name] - HORIZON_SLACK if name in horizons else None for name in names]
    with connection.cursor() as cursor:
        cursor.execute(_EVENTS_SQL, {"names": names, "since": since, "until": until, "limit": limit})
        # Django reads jsonb as text (its JSONField decodes it): decoded here once per event.
        return [(*row[:3], json.loads(row[3]) if isinstance(row[3], str) else row[3], *row[4:]) for row in cursor]


def _record(events: list[tuple], best: dict[int, Touch]) -> int:
    from campaigns.models import AttributionCheck, Conversion

    rows = []
    for event_id, contact_id, name, properties, occurred_at, _ in events:
        touch = best.get(event_id)
        if touch is None:
            continue
        value, currency = _revenue(properties)
        rows.append(
            Conversion(
                event_id=event_id,
                campaign_id=touch.campaign_id,
                run_id=touch.run_id,
                recipient_id=touch.recipient_id,
                message_id=touch.message_id,
                contact_id=contact_id,
                model=touch.model,
                event_name=name,
                occurred_at=occurred_at,
                touched_at=touch.at,
                value=value,
                currency=currency,
            )
        )
    with transaction.atomic():
        created = Conversion.objects.bulk_create(rows, ignore_conflicts=True)
        AttributionCheck.objects.bulk_create(
            [AttributionCheck(event_id=event[0]) for event in events], ignore_conflicts=True
        )
    return len(created)
