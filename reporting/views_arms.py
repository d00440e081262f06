"""The analytics page's experiment section: a funnel chart per arm and the comparisons in words."""

from __future__ import annotations

from typing import Any

from campaigns.models import Campaign, CampaignRun
from campaigns.selectors import campaign_variants
from reporting.arms import campaign_arms

# The funnel steps an arm's chart shows, when measured: (figure, in words).
ARM_STEPS = (
    ("recipients", "Recipients"),
    ("sent", "Sent"),
    ("delivered", "Delivered"),
    ("replies", "Replied"),
    ("clicks", "Clicked"),
    ("conversions", "Converted"),
)


def experiment_context(campaign: Campaign, run: CampaignRun | None) -> dict[str, Any]:
    """{"experiment": None} for a campaign without variants; else each arm with its chart's data."""
    if not campaign_variants(campaign):
        return {"experiment": None}
    report = campaign_arms(campaign, run=run)
    for index, arm in enumerate(report["arms"]):
        steps = [(words, arm[name]) for name, words in ARM_STEPS if arm[name] is not None]
        arm["chart"] = {"labels": [words for words, _ in steps], "values": [value for _, value in steps]}
        arm["chart_id"] = f"arm-{index}"
        arm["percent"] = {name: None if rate is None else round(100 * rate, 1) for name, rate in arm["rates"].items()}
    metric = report["metric"]
    report["sentences"] = [
        sentence
        for arm in report["arms"]
        for sentence in (
            (arm["versus_control"].get(metric) or {}).get("sentence"),
            (arm["versus_best"].get(metric) or {}).get("sentence") if not arm["control"] else None,
        )
        if sentence
    ]
    return {"experiment": report}
