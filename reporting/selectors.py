"""Reads for reporting: message status lists and campaign summaries.

Every figure comes from rows: the kept counters (``reporting.counters``) for message statuses,
error codes and cost, and SQL aggregates over recipients, messages and consent events for the
rest. Campaign messages are found through ``campaigns_recipient.message_id``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Trunc

from campaigns.models import Campaign, CampaignRun, Recipient, RecipientState
from messaging import selectors as messaging_selectors
from messaging.models import Message, MessageStatus
from messaging.providers import error_meaning
from reporting.cost import cost_against_estimate
from reporting.counters import counters_read, counters_recounted
from reporting.outcomes import outcome_figures, result_row_outcomes

BUCKETS = ("minute", "hour")

# Message statuses as the summary groups them.
REACHED_CARRIER = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.UNDELIVERED)
DELIVERED = (MessageStatus.DELIVERED, MessageStatus.READ)
IN_FLIGHT = (MessageStatus.PENDING, MessageStatus.QUEUED, MessageStatus.SENDING)
FAILED_WITH_CODE = (MessageStatus.FAILED, MessageStatus.UNDELIVERED)


# --- Message status list -------------------------------------------------------------------


def message_status_queryset(
    *,
    campaign: int | None = None,
    run: int | None = None,
    sender: int | None = None,
    channel: str | None = None,
    status: str | None = None,
    contact: int | None = None,
    direction: str | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
) -> QuerySet[Message]:
    """Messages matching every filter given (None means no filter)."""
    queryset = messaging_selectors.message_list()
    if campaign is not None or run is not None:
        recipients = Recipient.objects.filter(message_id__isnull=False)
        if campaign is not None:
            recipients = recipients.filter(run__campaign_id=campaign)
        if run is not None:
            recipients = recipients.filter(run_id=run)
        queryset = queryset.filter(id__in=recipients.values("message_id"))
    exact = {"sender_id": sender, "channel": channel, "status": status, "contact_id": contact, "direction": direction}
    queryset = queryset.filter(**{name: value for name, value in exact.items() if value is not None})
    if created_after is not None:
        queryset = queryset.filter(created_at__gte=created_after)
    if created_before is not None:
        queryset = queryset.filter(created_at__lt=created_before)
    return queryset


def message_status_counts(queryset: QuerySet[Message]) -> dict[str, int]:
    """How many of these messages are in each status (every status named, zeros included)."""
    counts = dict.fromkeys(MessageStatus.values, 0)
    for row in queryset.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


# --- Campaign summary ----------------------------------------------------------------------


def campaign_run_ids(campaign: Campaign, run: CampaignRun | None = None) -> list[int]:
    if run is not None:
        return [run.pk]
    return list(CampaignRun.objects.filter(campaign=campaign).order_by("pk").values_list("pk", flat=True))


def campaign_summary(campaign: Campaign, *, run: CampaignRun | None = None, bucket: str = "hour") -> dict[str, Any]:
    """Every figure of one run, or of all the campaign's runs, read from kept counters (no message scan).

    Recipient figures come from the runs' own counters (kept by campaigns in the same transaction
    as each recipient's move), the rest from reporting's counters (``reporting.counters``). The
    median time to deliver is computed from delivery-time buckets (``DELIVERY_BUCKET_SQL``).
    """
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {BUCKETS}")
    runs = _runs_of(campaign, run)
    run_ids = [r.pk for r in runs]
    messages = message_figures(run_ids)
    failures, cost = messages.pop("failures"), messages.pop("cost")
    sent, delivered, read = messages["sent"], messages["delivered"], messages["read"]
    return {
        "campaign": campaign.pk,
        "runs": run_ids,
        **_recipient_figures_kept(runs),
        "messages": messages,
        "delivery_rate": rate(delivered, sent),
        "read_rate": rate(read, delivered),
        "failures": failures,
        "cost": cost,
        "cost_against_estimate": cost_against_estimate(run_ids, cost, messages["total"]),
        **outcome_figures(run_ids, sent=sent, cost=cost),
        **_engagement_kept(run_ids, all_runs=run is None),
        "median_seconds_to_deliver": _median_kept(run_ids),
        "bucket": bucket,
        "timeline": _timeline_kept(run_ids, bucket),
    }


def _runs_of(campaign: Campaign, run: CampaignRun | None) -> list[CampaignRun]:
    if run is not None:
        return [run]
    return list(CampaignRun.objects.filter(campaign=campaign).order_by("pk"))


def _recipient_figures_kept(runs: list[CampaignRun]) -> dict[str, Any]:
    states: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for run in runs:
        for state in RecipientState.values:
            states[state] += getattr(run, state)
        reasons.update({reason or "unknown": n for reason, n in (run.skipped_by_reason or {}).items() if n})
    audience = sum(states.values())
    return {
        "audience": audience,
        "targeted": audience - states[RecipientState.SKIPPED],
        "recipients": {state: states[state] for state in RecipientState.values},
        "held": states[RecipientState.HELD],
        "skipped": states[RecipientState.SKIPPED],
        "skipped_by_reason": dict(sorted(reasons.items())),
        "unknown": states[RecipientState.UNKNOWN],
    }


def _engagement_kept(run_ids: list[int], *, all_runs: bool) -> dict[str, int]:
    from reporting.models import RunEngagementCounter

    totals = RunEngagementCounter.objects.filter(run_id__in=run_ids).aggregate(
        replies=Sum("replies"),
        replies_first=Sum("replies_first"),
        repliers=Sum("repliers"),
        opt_outs=Sum("opt_outs_72h"),
    )
    # A reply following messages of several runs counts once for the campaign (through the first).
    replies = totals["replies_first"] if all_runs else totals["replies"]
    return {"opt_outs_72h": totals["opt_outs"] or 0, "replies": replies or 0, "repliers": totals["repliers"] or 0}


def _median_kept(run_ids: list[int]) -> float | None:
    """percentile_cont(0.5) over the delivery-time buckets, each taken as its value."""
    from reporting.models import DeliveryTimeCounter

    rows = (
        DeliveryTimeCounter.objects.filter(run_id__in=run_ids, count__gt=0)
        .values("seconds")
        .annotate(n=Sum("count"))
        .order_by("seconds")
        .values_list("seconds", "n")
    )
    counted = [(seconds, n) for seconds, n in rows if n > 0]
    total = sum(n for _s, n in counted)
    if not total:
        return None
    position = 0.5 * (total - 1)
    low_index, fraction = int(position), position - int(position)

    def value_at(index: int) -> int:
        seen = 0
        for seconds, n in counted:
            seen += n
            if index < seen:
                return seconds
        return counted[-1][0]

    low, high = value_at(low_index), value_at(min(low_index + 1, total - 1))
    return round(low + fraction * (high - low), 3)


def _timeline_kept(run_ids: list[int], bucket: str) -> list[dict[str, Any]]:
    from reporting.models import RunMinuteCounter

    if not run_ids:
        return []
    rows = (
        RunMinuteCounter.objects.filter(run_id__in=run_ids)
        .annotate(at=Trunc("minute", bucket))
        .values("at")
        .annotate(sent=Sum("sent"), delivered=Sum("delivered"), read=Sum("read"), failed=Sum("failed"))
        .order_by("at")
    )
    kinds = ("sent", "delivered", "read", "failed")
    return [
        {"at": values["at"], **{kind: values[kind] for kind in kinds}}
        for values in (dict(row) for row in rows)
        if any(values[kind] for kind in kinds)
    ]


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def message_figures(run_ids: list[int], *, kept: bool = True) -> dict[str, Any]:
    by_status: Counter[str] = Counter()
    by_code: dict[str, Counter[str]] = defaultdict(Counter)
    cost: dict[str, list] = defaultdict(lambda: [Decimal(0), 0])
    counts = counters_read(run_ids) if kept else counters_recounted(run_ids)
    for (_run, status, code, unit), (count, price_total, priced) in counts.items():
        by_status[status] += count
        if status in FAILED_WITH_CODE:
            by_code[code][status] += count
        if priced:
            cost[unit][0] += price_total
            cost[unit][1] += priced
    failures: list[dict[str, Any]] = [
        {"error_code": code, "meaning": error_meaning(code), "count": sum(c.values()), "by_status": dict(c)}
        for code, c in by_code.items()
    ]
    failures.sort(key=lambda row: (-row["count"], row["error_code"]))
    return {
        "total": sum(by_status.values()),
        "by_status": {status: by_status[status] for status in MessageStatus.values},
        "in_flight": sum(by_status[s] for s in IN_FLIGHT),
        "sent": sum(by_status[s] for s in REACHED_CARRIER),
        "delivered": sum(by_status[s] for s in DELIVERED),
        "read": by_status[MessageStatus.READ],
        "undelivered": by_status[MessageStatus.UNDELIVERED],
        "failed": by_status[MessageStatus.FAILED],
        "canceled": by_status[MessageStatus.CANCELED],
        "skipped_at_send": by_status[MessageStatus.SKIPPED],
        "unknown": by_status[MessageStatus.UNKNOWN],
        "failures": failures,
        # Twilio reports prices as negative amounts; the cost is their size.
        "cost": [
            {"currency": unit or None, "amount": str(abs(total)), "priced_messages": priced}
            for unit, (total, priced) in sorted(cost.items())
        ],
    }


# --- Exports -------------------------------------------------------------------------------


def campaign_result_rows(campaign: Campaign, *, run: CampaignRun | None = None):
    """One row per recipient with its message's outcome, streamed from a server-side cursor."""
    return (
        Recipient.objects.filter(run_id__in=campaign_run_ids(campaign, run))
        .order_by("run_id", "id")
        .annotate(**result_row_outcomes())
        .values_list(  # type: ignore[misc]  # the plugin cannot see the annotations made by **result_row_outcomes()
            "run_id",
            "id",
            "contact_id",
            "contact__phone",
            "state",
            "reason",
            "detail",
            "message_id",
            "message__status",
            "message__error_code",
            "message__error_message",
            "message__sent_at",
            "message__delivered_at",
            "message__read_at",
            "message__failed_at",
            "message__price",
            "message__price_unit",
            "link_clicks",
            "first_clicked_at",
            "conversions_n",
            "conversion_value",
            "arm",
            "rollout",
        )
        .iterator(chunk_size=2000)
    )
