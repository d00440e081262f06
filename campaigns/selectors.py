"""Reads for campaigns: a segment's audience, as a queryset, a count, a sample or SQL.

Each function takes a Segment, a JSON rule tree or a validated rules.Node, and ``now`` to pin
relative dates ("30 days ago"): a dry run and the launch it predicts pass the same moment.
A stored definition is validated again on every use, so a rule that no longer validates
raises RuleError rather than matching everyone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection
from django.db.models import Count, Max, Min, Q, QuerySet

from audience.models import ConsentStatus, Contact
from campaigns.models import WINNER_ACTION, Campaign, CampaignAction, Event, Segment, Variant
from campaigns.segments import rules
from campaigns.segments.compile import compile_rule
from messaging.models import Message, MessageStatus
from messaging.selectors import unknown_window

SegmentSource = Segment | dict[str, Any] | rules.Node


def contact_event_history(contact_id: int) -> QuerySet[Event]:
    """A contact's events, the latest received first (read in order from event_contact_received)."""
    return (
        Event.objects.filter(contact_id=contact_id)
        .prefetch_related("matched_campaigns")
        .order_by("-received_at", "-id")
    )


def segment_list() -> QuerySet[Segment]:
    return Segment.objects.select_related("created_by")


def segment_rule(source: SegmentSource) -> rules.Node:
    if isinstance(source, rules.Leaf | rules.Group | rules.Not):
        return source
    return rules.validate(source.definition if isinstance(source, Segment) else source)


def segment_filter(source: SegmentSource, *, now: dt.datetime | None = None) -> Q:
    """The compiled Q over audience.Contact, to combine with other filters."""
    return compile_rule(segment_rule(source), now=now)


def segment_queryset(source: SegmentSource, *, now: dt.datetime | None = None) -> QuerySet[Contact]:
    return Contact.objects.filter(segment_filter(source, now=now))


def segment_count(source: SegmentSource, *, now: dt.datetime | None = None) -> int:
    """How many contacts match, whatever their consent (one query)."""
    return segment_queryset(source, now=now).count()


def segment_sample(source: SegmentSource, *, size: int = 10, now: dt.datetime | None = None) -> list[Contact]:
    """Some matching contacts, the most recently created first (one query)."""
    return list(segment_queryset(source, now=now).order_by("-created_at", "-id")[:size])


def segment_counts(source: SegmentSource, *, now: dt.datetime | None = None) -> dict[str, int]:
    """Matching contacts, and how many of them are opted in, in one query."""
    opted_in = Q(consent_status=ConsentStatus.OPTED_IN)
    return segment_queryset(source, now=now).aggregate(count=Count("id"), opted_in=Count("id", filter=opted_in))


def segment_preview(source: SegmentSource, *, size: int = 10, now: dt.datetime | None = None) -> dict[str, Any]:
    """The live preview: count, opted-in count and a sample (two queries; one when nobody matches)."""
    counts = segment_counts(source, now=now)
    sample = segment_sample(source, size=size, now=now) if counts["count"] else []
    return {**counts, "sample": sample}


def segment_where(source: SegmentSource, *, now: dt.datetime | None = None) -> tuple[str, tuple[Any, ...]]:
    """The compiled condition as a SQL fragment and its parameters, for raw statements.

    It names the contact table unaliased (``"audience_contact"."attributes"``), so embed it as
    ``... FROM audience_contact WHERE <sql> AND ...``; its EXISTS subqueries use aliases U0, U1...
    """
    query = segment_queryset(source, now=now).query
    compiler = query.get_compiler(connection=connection)
    sql, params = compiler.compile(query.where)
    return sql, tuple(params)


def segment_sql(source: SegmentSource, *, now: dt.datetime | None = None) -> tuple[str, tuple[Any, ...]]:
    """``SELECT "audience_contact"."id" FROM "audience_contact" WHERE ...`` and its parameters."""
    sql, params = segment_queryset(source, now=now).order_by().values("id").query.sql_with_params()
    return sql, tuple(params)


# --- Outcomes unknown --------------------------------------------------------------------------


def runs_unknown_outcomes(run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per run with unknown outcomes: how many messages, and when the first and the last give up."""
    rows = (
        Message.objects.filter(status=MessageStatus.UNKNOWN, recipient__run_id__in=run_ids)
        .values("recipient__run_id")
        .annotate(n=Count("id"), first=Min("sending_at"), last=Max("sending_at"))
        .order_by()
    )
    window = unknown_window()
    return {
        row["recipient__run_id"]: {
            "count": row["n"],
            "first_gives_up_at": row["first"] + window if row["first"] else None,
            "last_gives_up_at": row["last"] + window if row["last"] else None,
        }
        for row in rows
    }


def campaign_variants(campaign: Campaign) -> list[Variant]:
    """The campaign's experiment variants with their templates, in the order they were added."""
    return list(Variant.objects.filter(campaign=campaign).select_related("template").order_by("id"))


def winner_action(campaign: Campaign) -> CampaignAction | None:
    """The audit entry of the campaign's winner pick, if any."""
    return CampaignAction.objects.filter(campaign=campaign, action=WINNER_ACTION).order_by("-id").first()
