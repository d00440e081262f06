"""The experiment's arms as CSV: one row per arm, its figures and differences, cells escaped against formulas."""

from __future__ import annotations

from django.http import StreamingHttpResponse

from campaigns.models import Campaign, CampaignRun
from config.spreadsheet import csv_download
from reporting.arms import FIGURES, MEAN_METRICS, RATE_METRICS, campaign_arms
from reporting.exports import _rows

METRICS = [name for _, name, _ in (*RATE_METRICS, *MEAN_METRICS)]
COLUMNS = [
    "arm",
    "label",
    "control",
    "rollout",
    "weight",
    "template",
    "recipients",
    *FIGURES,
    *[f"{name}_rate" for _, name, _ in RATE_METRICS],
    "revenue_per_recipient",
    *[
        f"{name}_vs_{what}_{part}"
        for what in ("control", "best")
        for name in METRICS
        for part in ("diff", "low", "high")
    ],
    *[f"{name}_vs_{what}_sentence" for what in ("control", "best") for name in METRICS],
]


def arm_csv_rows(report: dict) -> list[list]:
    rows = []
    for arm in report["arms"]:
        row = [arm[key] for key in ("arm", "label", "control", "rollout", "weight", "template", "recipients")]
        row += [arm[name] for name in FIGURES]
        row += [arm["rates"].get(name) for _, name, _ in RATE_METRICS] + [arm["revenue_per_recipient"]]
        for what in ("control", "best"):
            for name in METRICS:
                found = arm[f"versus_{what}"].get(name) or {}
                row += [found.get("estimate"), found.get("low"), found.get("high")]
        for what in ("control", "best"):
            row += [(arm[f"versus_{what}"].get(name) or {}).get("sentence", "") for name in METRICS]
        rows.append(row)
    return rows


def campaign_arms_csv(campaign: Campaign, *, run: CampaignRun | None) -> StreamingHttpResponse:
    rows = arm_csv_rows(campaign_arms(campaign, run=run))
    suffix = f"-run-{run.pk}" if run else ""
    return csv_download(_rows(COLUMNS, rows), f"campaign-{campaign.pk}{suffix}-arms.csv")
