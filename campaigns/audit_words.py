"""A campaign's audit list in words staff read: what was done, to which status, with what.

The audit rows keep machine-readable detail (the API serves it as is); the admin shows it through
this module, so a new kind of action reads sensibly without a template change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from campaigns.models import CampaignAction, CampaignStatus
from messaging.models import MessageStatus


def status_change_words(entry: CampaignAction) -> str:
    labels = dict(CampaignStatus.choices)
    before, after = labels.get(entry.from_status, entry.from_status), labels.get(entry.to_status, entry.to_status)
    if not before and not after:
        return ""
    if before == after or not before:
        return f"stays {after.lower()}" if before == after else f"now {after.lower()}"
    return f"{before} → {after}"


def detail_words(detail: Mapping[str, Any] | None) -> str:
    """The detail of an audit row as a short sentence; keys nobody taught this module read as words."""
    parts = []
    for key, value in (detail or {}).items():
        if value in (None, "", [], {}):
            continue
        if key == "messages" and isinstance(value, list):
            continue  # the count says how many; the ids stay in the API for those who need them
        parts.append(_detail_part(key, value))
    return "; ".join(parts)


def _detail_part(key: str, value: Any) -> str:
    if key == "run":
        return f"run {value}"
    if key == "duplicate_of":
        return f"copy of campaign {value}"
    if key == "contact":
        return f"as contact {value}"
    if key == "to":
        return f"to {value}"
    if key == "sid":
        return f"provider reference {value}"
    if key == "fields":
        return "changed " + ", ".join(str(field).replace("_", " ") for field in value)
    if key == "count":
        return f"{value} message{'s' if value != 1 else ''}"
    if key == "status_after" and isinstance(value, Mapping):
        labels = dict(MessageStatus.choices)
        return "now " + ", ".join(f"{count} {labels.get(status, status).lower()}" for status, count in value.items())
    words = key.replace("_", " ")
    if isinstance(value, Mapping):
        return f"{words}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in value.items())
    if isinstance(value, list):
        return f"{words}: " + ", ".join(str(item) for item in value)
    return f"{words} {value}"
