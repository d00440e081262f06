"""Clicks, conversions, revenue and cost per experiment arm: the figures the outcome tables hold.

A source for ``reporting.arms`` (registered in ``ReportingConfig.ready``). Clicks and
conversions count recipients (who clicked a tracked link of their message, who converted), so
they compare as rates; revenue comes with the sum of its squares for the per-recipient interval;
cost is what the provider charged, in the price unit of the campaign's messages.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

from reporting.arms import ArmKey

ARM_OUTCOMES_SQL = """
    SELECT r.arm, r.rollout,
           count(*) FILTER (WHERE clicked.any) AS clicks,
           count(*) FILTER (WHERE converted.n > 0) AS conversions,
           sum(converted.value) AS revenue,
           sum(converted.value * converted.value) AS revenue_sq,
           sum(abs(m.price)) AS cost
    FROM campaigns_recipient r
    LEFT JOIN messaging_message m ON m.id = r.message_id
    LEFT JOIN LATERAL (
        SELECT true AS any FROM messaging_link l WHERE l.message_id = r.message_id AND l.clicks > 0 LIMIT 1
    ) clicked ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS n, COALESCE(sum(c.value), 0) AS value
        FROM campaigns_conversion c WHERE c.recipient_id = r.id
    ) converted ON true
    WHERE r.run_id = ANY(%(runs)s) AND r.arm IS NOT NULL
    GROUP BY r.arm, r.rollout
"""


def arm_outcome_figures(run_ids: list[int]) -> dict[ArmKey, dict[str, Any]]:
    if not run_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(ARM_OUTCOMES_SQL, {"runs": list(run_ids)})
        rows = cursor.fetchall()
    return {
        (arm, rollout): {
            "clicks": clicks,
            "conversions": conversions,
            "revenue": revenue,
            "revenue_sq": revenue_sq,
            "cost": cost,
        }
        for arm, rollout, clicks, conversions, revenue, revenue_sq, cost in rows
    }
