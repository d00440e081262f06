"""Clicks, conversions, revenue and cost per experiment arm, read without a scan of the recipients.

A source for ``reporting.arms`` (registered in ``ReportingConfig.ready``). Cost comes from the
arm counters (kept with the message counters); clicks from the click rows, few beside the
recipients; conversions and revenue from the arm conversion counters (``reporting.arm_conversions``,
kept by triggers on the conversion rows). Clicks and conversions count
recipients (who clicked a tracked link of their message, who converted), so they compare as rates;
revenue comes with the sum of its squares for the per-recipient interval.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db import connection
from django.db.models import Sum

from campaigns.models import CampaignRun
from campaigns.services.arms import WAITING
from reporting.arm_conversions import arm_conversions_read
from reporting.arms import ArmKey
from reporting.models import ArmCounter

CLICKERS_SQL = """
    SELECT r.arm, r.rollout, count(DISTINCT r.id)
    FROM messaging_linkclick c
    JOIN messaging_link l ON l.id = c.link_id
    JOIN campaigns_recipient r ON r.message_id = l.message_id
    WHERE r.run_id = ANY(%(runs)s) AND r.arm IS NOT NULL
    GROUP BY r.arm, r.rollout
"""


def arm_outcome_figures(run_ids: list[int]) -> dict[ArmKey, dict[str, Any]]:
    if not run_ids:
        return {}
    figures: dict[ArmKey, dict[str, Any]] = defaultdict(
        lambda: {"clicks": 0, "conversions": 0, "revenue": 0, "revenue_sq": 0, "cost": 0}
    )
    for sizes in CampaignRun.objects.filter(pk__in=run_ids).values_list("arm_sizes", flat=True):
        for key in sizes or {}:  # every arm a run has gets figures, zero until something happens
            if key != WAITING:
                figures[(int(key.removeprefix("rollout:")), key.startswith("rollout:"))]
    costs = ArmCounter.objects.filter(run_id__in=run_ids).values_list("arm", "rollout").annotate(cost=Sum("cost"))
    for arm, rollout, cost in costs:
        figures[(arm, rollout)]["cost"] = cost
    with connection.cursor() as cursor:
        cursor.execute(CLICKERS_SQL, {"runs": list(run_ids)})
        for arm, rollout, clickers in cursor.fetchall():
            figures[(arm, rollout)]["clicks"] = clickers
    for key, (converters, revenue, revenue_sq) in arm_conversions_read(list(run_ids)).items():
        figures[key].update(conversions=converters, revenue=revenue, revenue_sq=revenue_sq)
    return dict(figures)
