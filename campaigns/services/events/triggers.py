"""Validating a campaign's trigger (event name or keyword, conditions, contact rule) when it is saved."""

from __future__ import annotations

import logging
import re
from typing import Any

from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStatus,
    ScheduleType,
)
from campaigns.services.events.conditions import conditions_clean
from campaigns.services.segments import SegmentError, segment_definition_clean
from messaging.keywords import KEYWORDS

logger = logging.getLogger(__name__)


EVENT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$")


KEYWORD_RE = re.compile(r"^[A-Z0-9]{1,32}$")


LIVE_STATUSES = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED)


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
