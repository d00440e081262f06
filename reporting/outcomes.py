"""Outcome figures of campaign runs: clicks on tracked links and attributed conversions.

Clicks are read from the links of the runs' messages (``messaging_link.clicks``, kept exact by
the click drain); conversions from ``campaigns_conversion``. Rates are over the messages that
reached the carrier (``sent``), as the summary's delivery rate is; revenue and cost are kept per
currency, never added across currencies. Cost is the runs' message prices (the summary's cost).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, IntegerField, Min, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from campaigns.models import Conversion
from messaging.models import Link

_CLICKS_SQL = """
SELECT r.run_id, count(DISTINCT l.message_id) FILTER (WHERE l.clicks > 0), coalesce(sum(l.clicks), 0)
FROM campaigns_recipient r JOIN messaging_link l ON l.message_id = r.message_id
WHERE r.run_id = ANY(%(runs)s) AND r.message_id IS NOT NULL
GROUP BY r.run_id
"""


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def clicks_by_run(run_ids: list[int]) -> dict[int, tuple[int, int]]:
    """{run id: (messages clicked at least once, clicks)}; preview fetches and HEAD requests are not clicks."""
    if not run_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_CLICKS_SQL, {"runs": run_ids})
        return {run_id: (unique, int(total)) for run_id, unique, total in cursor.fetchall()}


def conversions_by_run(run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """{run id: {"count": n, "revenue": {currency: amount}}}."""
    found: dict[int, dict[str, Any]] = defaultdict(lambda: {"count": 0, "revenue": defaultdict(Decimal)})
    rows = (
        Conversion.objects.filter(run_id__in=run_ids, message__isnull=False)  # the control group's are the arms'
        .values("run_id", "currency")
        .annotate(n=Count("id"), value=Sum("value"))
        .order_by()
    )
    for row in rows:
        figures = found[row["run_id"]]
        figures["count"] += row["n"]
        if row["value"] is not None:
            figures["revenue"][row["currency"]] += row["value"]
    return found


def _money(amounts: dict[str, Decimal], divisor: int | None = None) -> list[dict[str, Any]]:
    if divisor == 0:
        return []
    return [
        {
            "currency": currency or None,
            "amount": str((amount / divisor if divisor else amount).quantize(Decimal("0.0001"))),
        }
        for currency, amount in sorted(amounts.items())
    ]


def outcome_figures(run_ids: list[int], *, sent: int, cost: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary's clicks and conversions of ``run_ids``, given its ``sent`` count and ``cost`` list."""
    clicks = clicks_by_run(run_ids)
    unique, total = sum(c[0] for c in clicks.values()), sum(c[1] for c in clicks.values())
    conversions = conversions_by_run(run_ids)
    count = sum(c["count"] for c in conversions.values())
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for figures in conversions.values():
        for currency, amount in figures["revenue"].items():
            revenue[currency] += amount
    spent = {c["currency"] or "": Decimal(c["amount"]) for c in cost}
    return {
        "clicks": {"unique": unique, "total": total, "click_rate": _rate(unique, sent)},
        "conversions": {
            "count": count,
            "conversion_rate": _rate(count, sent),
            "revenue": _money(revenue),
            "revenue_per_message": _money(revenue, sent),
            "cost_per_conversion": _money(spent, count),
        },
    }


def run_outcomes(run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per run, for the runs compared side by side: unique and total clicks, conversions and revenue."""
    clicks, conversions = clicks_by_run(run_ids), conversions_by_run(run_ids)
    return {
        run_id: {
            "clicks_unique": clicks.get(run_id, (0, 0))[0],
            "clicks": clicks.get(run_id, (0, 0))[1],
            "conversions": conversions[run_id]["count"] if run_id in conversions else 0,
            "revenue": _money(conversions[run_id]["revenue"]) if run_id in conversions else [],
        }
        for run_id in run_ids
    }


def result_row_outcomes() -> dict[str, Any]:
    """Annotations of a recipient row for the results export: its clicks, first click and conversions."""
    links = Link.objects.filter(message_id=OuterRef("message_id")).order_by().values("message_id")
    conversions = Conversion.objects.filter(recipient_id=OuterRef("pk")).order_by().values("recipient_id")
    return {
        "link_clicks": Coalesce(Subquery(links.annotate(n=Sum("clicks")).values("n")), 0, output_field=IntegerField()),
        "first_clicked_at": Subquery(links.annotate(at=Min("first_clicked_at")).values("at")),
        "conversions_n": Coalesce(
            Subquery(conversions.annotate(n=Count("id")).values("n")), 0, output_field=IntegerField()
        ),
        "conversion_value": Subquery(conversions.annotate(v=Sum("value")).values("v")),
    }
