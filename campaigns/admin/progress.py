"""A run's progress bar: its counters as parts of one bar, drawn as HTML the page refreshes live."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.utils.html import format_html, format_html_join

from campaigns.models import (
    CampaignRun,
    SkipReason,
)

# The bar's parts, in order from the left; what is left of the bar is pending.
PROGRESS_PARTS = ("sent", "failed", "unknown", "skipped", "sending", "held")
ACTIVE_RUN_STATUSES = ("running", "paused")


def run_progress(run: CampaignRun) -> dict[str, Any]:
    """A run's counters as the progress bar shows them (also served as JSON to refresh it)."""
    total = run.total
    # Recipients a cancel skipped were never dealt with: a cancelled run's bar shows how far it got.
    cancelled = (run.skipped_by_reason or {}).get(SkipReason.CANCELLED, 0)
    done = run.sent + run.skipped + run.failed + run.unknown - cancelled
    counts = {name: getattr(run, name) for name in ("pending", *PROGRESS_PARTS)}
    shown = ("sent", "sending", "skipped", "failed", *(("unknown",) if run.unknown else ()), "held", "pending")
    text = ", ".join(f"{counts[name]} {name}" for name in shown)
    parts, x = [], 0.0
    for name in PROGRESS_PARTS:
        width = 100 * counts[name] / total if total else 0.0
        parts.append({"name": name, "x": round(x, 3), "width": round(width, 3)})
        x += width
    return {
        "id": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "active": run.status in ACTIVE_RUN_STATUSES,
        "total": total,
        **counts,
        "percent": round(100 * done / total) if total else 100,
        "text": f"{text} of {total}",
        "parts": parts,
    }


def run_progress_bar(run: CampaignRun | None) -> str:
    """A stacked SVG bar by state (the <progress> beside it is for screen readers), no inline style or
    script (CSP-safe); run_progress.js refreshes it while the run is active."""
    if run is None:
        return "—"
    data = run_progress(run)
    rects = format_html_join(
        "",
        '<rect class="run-part run-{}" data-part="{}" x="{}" y="0" width="{}" height="10"></rect>',
        ((part["name"], part["name"], part["x"], part["width"]) for part in data["parts"]),
    )
    return format_html(
        '<span class="run-progress" data-run="{}" data-active="{}" data-url="{}">'
        '<progress class="run-progress-value" max="100" value="{}" aria-label="run progress">{}%</progress>'
        '<svg class="run-bar" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
        '<rect class="run-track" x="0" y="0" width="100" height="10"></rect>{}</svg> '
        '<span class="run-percent">{}%</span> <small class="run-text">({})</small></span>',
        run.pk,
        "true" if data["active"] else "false",
        reverse("admin:campaigns_campaign_progress"),
        data["percent"],
        data["percent"],
        rects,
        data["percent"],
        data["text"],
    )
