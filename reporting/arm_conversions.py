"""Converted recipients and their revenue per experiment arm: the kept counters and the scan they equal.

``ArmConversionCounter`` rows are moved by triggers on ``campaigns_conversion`` (migration
``reporting.0012_arm_conversion_counters``), in the transaction that writes the conversions, so the
arms endpoint reads a few rows whatever the number of conversions. A recipient counts once however
many conversions it has; its revenue is the sum of its conversions' values (any currency, as the
arms compare amounts per recipient), and ``revenue_sq`` sums each recipient's revenue squared.
``ARM_CONVERSIONS_SCAN_SQL`` computes the same figures from the conversion rows: the recount and the
checks (tests, ``bench.reporting``) use it.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import connection
from django.db.models import Sum

from reporting.models import ArmConversionCounter

ArmConversions = dict[tuple[int, bool], tuple[int, Decimal, Decimal]]

ARM_CONVERSIONS_SCAN_SQL = """
    SELECT per.run_id, r.arm, r.rollout, count(*), sum(per.value), sum(per.value * per.value)
    FROM (
        SELECT c.run_id, c.recipient_id, COALESCE(sum(c.value), 0) AS value
        FROM campaigns_conversion c
        WHERE c.recipient_id IS NOT NULL {where}
        GROUP BY c.run_id, c.recipient_id
    ) per
    JOIN campaigns_recipient r ON r.id = per.recipient_id
    WHERE r.arm IS NOT NULL
    GROUP BY per.run_id, r.arm, r.rollout
"""


def arm_conversions_read(run_ids: list[int]) -> ArmConversions:
    """(arm, rollout) -> (converted recipients, revenue, sum of revenue squared) over these runs, kept."""
    rows = (
        ArmConversionCounter.objects.filter(run_id__in=run_ids, converters__gt=0)
        .values_list("arm", "rollout")
        .annotate(n=Sum("converters"), revenue=Sum("revenue"), revenue_sq=Sum("revenue_sq"))
    )
    return {(arm, rollout): (n, revenue, revenue_sq) for arm, rollout, n, revenue, revenue_sq in rows}


def arm_conversions_scanned(run_ids: list[int]) -> ArmConversions:
    """The same figures from the conversion rows themselves (what the counters must equal)."""
    figures: dict[tuple[int, bool], list] = {}
    with connection.cursor() as cursor:
        cursor.execute(ARM_CONVERSIONS_SCAN_SQL.format(where="AND c.run_id = ANY(%(runs)s)"), {"runs": run_ids})
        for _run, arm, rollout, n, revenue, revenue_sq in cursor.fetchall():
            known = figures.setdefault((arm, rollout), [0, Decimal(0), Decimal(0)])
            known[0], known[1], known[2] = known[0] + n, known[1] + revenue, known[2] + revenue_sq
    return {key: (n, revenue, revenue_sq) for key, (n, revenue, revenue_sq) in figures.items()}


def arm_conversions_recount(cursor, runs: list[int] | None) -> None:
    """Rebuild the counters of these runs (None: all) from the conversion rows, inside the caller's transaction."""
    cursor.execute("LOCK TABLE reporting_armconversioncounter IN SHARE ROW EXCLUSIVE MODE")
    where = "" if runs is None else "AND c.run_id = ANY(%(runs)s)"
    cursor.execute(
        "DELETE FROM reporting_armconversioncounter" + ("" if runs is None else " WHERE run_id = ANY(%(runs)s)"),
        {"runs": runs},
    )
    cursor.execute(
        "INSERT INTO reporting_armconversioncounter (run_id, arm, rollout, converters, revenue, revenue_sq) "
        + ARM_CONVERSIONS_SCAN_SQL.format(where=where),
        {"runs": runs},
    )
