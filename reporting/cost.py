"""Estimated against actual cost for a campaign's summary.

The estimate is what each run kept at launch (``CampaignRun.cost_estimate``: rendered segments
times the price table); the actual is what the provider charged, per currency, over the messages
whose price is known so far (prices arrive after the final status). Both stay per currency: an
estimate in USD is never set against, or added to, a bill in EUR.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from campaigns.models import CampaignRun
from campaigns.services.cost import money


def cost_against_estimate(run_ids: list[int], actual: list[dict[str, Any]], messages_total: int) -> dict[str, Any]:
    """``actual`` is the summary's cost list: [{"currency", "amount", "priced_messages"}, ...]."""
    estimates = list(CampaignRun.objects.filter(pk__in=run_ids).values_list("cost_estimate", flat=True))
    estimated: dict[str, list] = {}
    unpriced = 0
    for estimate in estimates:
        if not estimate:
            continue
        unpriced += estimate["unpriced"]["messages"]
        for total in estimate["totals"]:
            row = estimated.setdefault(total["currency"], [Decimal(0), 0])
            row[0] += Decimal(total["amount"])
            row[1] += total["messages"]
    charged = {row["currency"] or "": row for row in actual}
    currencies = sorted(set(estimated) | set(charged))
    priced = sum(row["priced_messages"] for row in actual)
    return {
        "runs": len(run_ids),
        "runs_estimated": sum(1 for estimate in estimates if estimate),
        "unpriced_recipients": unpriced,
        "messages_awaiting_price": max(messages_total - priced, 0),
        "currencies": [
            {
                "currency": currency or None,
                "estimated": str(estimated[currency][0]) if currency in estimated else None,
                "estimated_messages": estimated[currency][1] if currency in estimated else 0,
                "actual": str(charged[currency]["amount"]) if currency in charged else None,
                "priced_messages": charged[currency]["priced_messages"] if currency in charged else 0,
            }
            for currency in currencies
        ],
    }


def cost_rows(compared: dict[str, Any]) -> list[dict[str, str]]:
    """The comparison as the analytics page prints it, one line per currency."""
    return [
        {
            "currency": row["currency"] or "(no currency given)",
            "actual": money(row["actual"]) if row["actual"] is not None else "—",
            "estimated": money(row["estimated"]) if row["estimated"] is not None else "—",
            "priced_messages": str(row["priced_messages"]),
        }
        for row in compared["currencies"]
    ]
