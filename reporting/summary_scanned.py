"""A campaign's summary computed by scanning recipients, messages and consent events: the truth that
``reporting.selectors.campaign_summary`` (read from kept counters) must equal."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from django.db import connection
from django.db.models import Count

from audience.choices import ConsentStatus
from campaigns.models import Campaign, CampaignRun, Recipient, RecipientState
from messaging.models import Direction, MessageStatus
from reporting.cost import cost_against_estimate
from reporting.counter_sql import DELIVERY_SECONDS_SQL, HAS_DELIVERY_SECONDS_SQL, OPT_OUT_WINDOW, SENT_TIME_SQL
from reporting.outcomes import outcome_figures
from reporting.selectors import BUCKETS, campaign_run_ids, message_figures, rate

# The timeline's series: each status's time column, named by the status (the parameter and the point's key).
TIMELINE_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.FAILED)


def campaign_summary_scanned(
    campaign: Campaign, *, run: CampaignRun | None = None, bucket: str = "hour"
) -> dict[str, Any]:
    """The same figures computed by scanning recipients, messages and consent events (the truth).

    Slow on big campaigns; tests and the repair tools compare ``campaign_summary`` with it.
    """
    run_ids = campaign_run_ids(campaign, run)
    messages = message_figures(run_ids, kept=False)
    failures, cost = messages.pop("failures"), messages.pop("cost")
    sent, delivered, read = messages["sent"], messages["delivered"], messages["read"]
    return {
        "campaign": campaign.pk,
        "runs": run_ids,
        **_recipient_figures(run_ids),
        "messages": messages,
        "delivery_rate": rate(delivered, sent),
        "read_rate": rate(read, delivered),
        "failures": failures,
        "cost": cost,
        "cost_against_estimate": cost_against_estimate(run_ids, cost, messages["total"]),
        **outcome_figures(run_ids, sent=sent, cost=cost),
        "opt_outs_72h": _opt_outs_within(run_ids),
        **_replies(run_ids),
        "median_seconds_to_deliver": _median_seconds_to_deliver(run_ids),
        "bucket": bucket,
        "timeline": _timeline(run_ids, bucket),
    }


def _recipient_figures(run_ids: list[int]) -> dict[str, Any]:
    # States alone come from the (run, state) index; reasons are read for skipped rows only.
    recipients = Recipient.objects.filter(run_id__in=run_ids).order_by()
    states = Counter(dict(recipients.values("state").annotate(n=Count("id")).values_list("state", "n")))
    skipped = recipients.filter(state=RecipientState.SKIPPED).values("reason").annotate(n=Count("id"))
    skipped_by_reason = {row["reason"] or "unknown": row["n"] for row in skipped}
    audience = sum(states.values())
    return {
        "audience": audience,
        "targeted": audience - states[RecipientState.SKIPPED],
        "recipients": {state: states[state] for state in RecipientState.values},
        "held": states[RecipientState.HELD],
        "skipped": states[RecipientState.SKIPPED],
        "skipped_by_reason": dict(sorted(skipped_by_reason.items())),
        "unknown": states[RecipientState.UNKNOWN],
    }


def _fetch(sql: str, params: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _opt_outs_within(run_ids: list[int]) -> int:
    """Recipients who opted out within 72 h after their message was sent."""
    if not run_ids:
        return 0
    sql = f"""
        SELECT count(DISTINCT r.id)
        FROM audience_consentevent ce
        JOIN campaigns_recipient r ON r.contact_id = ce.contact_id AND r.run_id = ANY(%(runs)s)
        JOIN messaging_message m ON m.id = r.message_id
        WHERE ce.to_status = %(opted_out)s
          AND ce.created_at >= {SENT_TIME_SQL} AND ce.created_at < {SENT_TIME_SQL} + %(window)s
    """
    return _fetch(sql, {"runs": run_ids, "window": OPT_OUT_WINDOW, "opted_out": ConsentStatus.OPTED_OUT})[0][0]


def _replies(run_ids: list[int]) -> dict[str, int]:
    """Inbound messages from recipients after their message was sent, and how many recipients replied."""
    if not run_ids:
        return {"replies": 0, "repliers": 0}
    sql = f"""
        SELECT count(DISTINCT i.id), count(DISTINCT r.id)
        FROM messaging_message i
        JOIN campaigns_recipient r ON r.contact_id = i.contact_id AND r.run_id = ANY(%(runs)s)
        JOIN messaging_message m ON m.id = r.message_id
        WHERE i.direction = %(inbound)s AND i.created_at > {SENT_TIME_SQL}
    """
    replies, repliers = _fetch(sql, {"runs": run_ids, "inbound": Direction.INBOUND})[0]
    return {"replies": replies, "repliers": repliers}


def _median_seconds_to_deliver(run_ids: list[int]) -> float | None:
    """The exact median of the time to deliver (``DELIVERY_SECONDS_SQL``: from the request to delivered)."""
    sql = f"""
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY {DELIVERY_SECONDS_SQL})
        FROM campaigns_recipient r JOIN messaging_message m ON m.id = r.message_id
        WHERE r.run_id = ANY(%(runs)s) AND {HAS_DELIVERY_SECONDS_SQL}
    """
    value = _fetch(sql, {"runs": run_ids})[0][0] if run_ids else None
    return round(float(value), 3) if value is not None else None


def _timeline(run_ids: list[int], bucket: str) -> list[dict[str, Any]]:
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {BUCKETS}")
    if not run_ids:
        return []
    sql = f"""
        SELECT date_trunc(%(bucket)s, t.at) AS b, t.kind, count(*)
        FROM campaigns_recipient r
        JOIN messaging_message m ON m.id = r.message_id
        CROSS JOIN LATERAL (VALUES (%(sent)s, {SENT_TIME_SQL}), (%(delivered)s, m.delivered_at),
                                   (%(read)s, m.read_at), (%(failed)s, m.failed_at)) AS t (kind, at)
        WHERE r.run_id = ANY(%(runs)s) AND t.at IS NOT NULL
        GROUP BY 1, 2
        ORDER BY 1
    """
    points: dict[dt.datetime, dict[str, Any]] = {}
    kinds = {status.value: status.value for status in TIMELINE_STATUSES}
    for at, kind, n in _fetch(sql, {"runs": run_ids, "bucket": bucket, **kinds}):
        point = points.setdefault(at, {"at": at, **dict.fromkeys(kinds, 0)})
        point[kind] = n
    return list(points.values())
