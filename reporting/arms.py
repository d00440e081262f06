"""Per-arm figures of a campaign's experiment, with each arm's differences against control and the best arm.

Read from kept figures only, never from a scan of recipients or messages: the arms' sizes from
the runs (``CampaignRun.arm_sizes``, written with the snapshot), their funnel from
``ArmCounter`` (``reporting.arm_counters``). Other figures per arm (clicks, conversions,
revenue, cost) come from the sources in ``ARM_FIGURE_SOURCES``: each takes the run ids and
returns {(arm, rollout): {figure: value}}, and its figures become more columns of the same rows.
A rate metric's figure counts recipients (who clicked, who converted), so it is a proportion of
the arm's recipients; ``revenue`` is compared per recipient, which needs ``revenue_sq`` (the sum
of each recipient's revenue squared) from its source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import Sum

from campaigns.models import Campaign, CampaignRun
from campaigns.selectors import campaign_variants, winner_action
from campaigns.services.arms import CONTROL_ARM, WAITING
from reporting import stats
from reporting.models import ArmCounter

ArmKey = tuple[int, bool]  # (arm, rollout)
ArmFigureSource = Callable[[list[int]], dict[ArmKey, dict[str, Any]]]
ARM_FIGURE_SOURCES: list[ArmFigureSource] = []

COUNTED = ("sent", "delivered", "read", "failed", "repliers", "replies", "opt_outs_72h")
# Compared as a share of the arm's recipients: (figure, its name in the API, in words).
RATE_METRICS = (
    ("delivered", "delivered", "delivery rate"),
    ("repliers", "replies", "reply rate"),
    ("clicks", "clicks", "click rate"),
    ("conversions", "conversions", "conversion rate"),
)
MEAN_METRICS = (("revenue", "revenue", "revenue per recipient"),)
FIGURES = ("sent", "delivered", "read", "failed", "replies", "clicks", "conversions", "revenue", "cost")


def arm_figure_source_add(source: ArmFigureSource) -> None:
    """Register more per-arm figures (called from an AppConfig.ready)."""
    if source not in ARM_FIGURE_SOURCES:
        ARM_FIGURE_SOURCES.append(source)


def campaign_arms(campaign: Campaign, *, run: CampaignRun | None = None) -> dict[str, Any]:
    """The experiment of one run, or of all the campaign's runs: every arm's figures and comparisons."""
    runs = [run] if run is not None else list(CampaignRun.objects.filter(campaign=campaign).order_by("pk"))
    run_ids = [r.pk for r in runs]
    variants = campaign_variants(campaign)
    labels = {variant.pk: variant.label for variant in variants}
    rows: dict[ArmKey, dict[str, Any]] = {}
    for variant in variants:
        rows[(variant.pk, False)] = _row(variant.pk, variant.label, False, variant.weight, variant.template.name)
    if campaign.control_share:
        rows[(CONTROL_ARM, False)] = _row(CONTROL_ARM, "Control", False, None, "")
    _sizes_add(rows, runs, labels)
    _counted_add(rows, run_ids, labels)
    for source in ARM_FIGURE_SOURCES:
        for key, figures in source(run_ids).items():
            rows.setdefault(key, _row(key[0], _label(key, labels), key[1], None, "")).update(figures)
    arms = sorted(rows.values(), key=lambda row: (row["rollout"], row["control"], row["variant"] or 0))
    for row in arms:
        row["rates"] = {name: _share(row.get(field), row["recipients"]) for field, name, _ in RATE_METRICS}
        row["revenue_per_recipient"] = _share(row.get("revenue"), row["recipients"])
    _compare(arms)
    for row in arms:  # the API's names: replies counts recipients who replied, as the rate does
        row["replies"], row["replies_total"] = row.pop("repliers"), row.pop("replies_all")
        row.pop("revenue_sq", None)
    return {
        "campaign": campaign.pk,
        "runs": run_ids,
        "experiment": bool(variants),
        "control_share": campaign.control_share,
        "metric": campaign.winner_metric or "replies",
        "waiting_for_winner": sum(r.arm_sizes.get(WAITING, 0) for r in runs),
        "winner": _winner(campaign),
        "arms": arms,
    }


def _row(arm: int, label: str, rollout: bool, weight: int | None, template: str) -> dict[str, Any]:
    return {
        "arm": "control" if arm == CONTROL_ARM else str(arm),
        "variant": None if arm == CONTROL_ARM else arm,
        "label": label,
        "control": arm == CONTROL_ARM,
        "rollout": rollout,
        "weight": weight,
        "template": template,
        "recipients": 0,
        **dict.fromkeys(("sent", "delivered", "read", "failed", "repliers", "replies_all", "opt_outs_72h"), 0),
        **dict.fromkeys(("clicks", "conversions", "revenue", "revenue_sq", "cost"), None),
    }


def campaign_arm_labels(campaign: Campaign) -> dict[int, str]:
    return {variant.pk: variant.label for variant in campaign_variants(campaign)}


def arm_label(labels: dict[int, str], arm: int | None, rollout: bool) -> str:
    """A recipient's arm in words ('' outside an experiment or while waiting for a winner)."""
    return "" if arm is None else _label((arm, rollout), labels)


def _label(key: ArmKey, labels: dict[int, str]) -> str:
    arm, rollout = key
    label = "Control" if arm == CONTROL_ARM else labels.get(arm, f"variant {arm}")
    return f"{label} (rest of the audience)" if rollout else label


def _sizes_add(rows: dict[ArmKey, dict[str, Any]], runs: list[CampaignRun], labels: dict[int, str]) -> None:
    for run in runs:
        for key, count in (run.arm_sizes or {}).items():
            if key == WAITING:
                continue
            rollout = key.startswith("rollout:")
            arm = int(key.removeprefix("rollout:"))
            row = rows.setdefault((arm, rollout), _row(arm, _label((arm, rollout), labels), rollout, None, ""))
            row["recipients"] += count


def _counted_add(rows: dict[ArmKey, dict[str, Any]], run_ids: list[int], labels: dict[int, str]) -> None:
    counted = (
        ArmCounter.objects.filter(run_id__in=run_ids)
        .values("arm", "rollout")
        .annotate(**{name: Sum(name) for name in COUNTED})
    )
    for item in counted:
        key = (item["arm"], item["rollout"])
        row = rows.setdefault(key, _row(key[0], _label(key, labels), key[1], None, ""))
        for name in COUNTED:
            row["replies_all" if name == "replies" else name] += item[name] or 0


def _share(part, whole: int) -> float | None:
    return None if part is None or not whole else part / whole


def _compare(arms: list[dict[str, Any]]) -> None:
    """Each compared arm against the control group and against the best arm, metric by metric."""
    tested = [row for row in arms if not row["rollout"]]
    control = next((row for row in tested if row["control"]), None)
    variants = [row for row in tested if not row["control"]]
    for row in arms:
        row["versus_control"], row["versus_best"] = {}, {}
    for field, name, words in (*RATE_METRICS, *MEAN_METRICS):
        measured = [row for row in variants if _value(row, field) is not None and row["recipients"]]
        if control is not None and _value(control, field) is not None:
            for row in measured:
                row["versus_control"][name] = _difference(row, control, field, words)
        ranked = sorted(measured, key=lambda row: _value(row, field), reverse=True)
        if len(ranked) >= 2:
            best, runner_up = ranked[0], ranked[1]
            for row in ranked:
                reference = runner_up if row is best else best
                row["versus_best"][name] = {"best": best["label"], **_difference(row, reference, field, words)}


def _value(row: dict[str, Any], field: str) -> float | None:
    if field == "revenue":
        return _share(row.get("revenue"), row["recipients"])
    return _share(row.get(field), row["recipients"])


def _difference(row: dict[str, Any], reference: dict[str, Any], field: str, words: str) -> dict[str, Any]:
    if field == "revenue":
        found = None
        if row.get("revenue_sq") is not None and reference.get("revenue_sq") is not None:
            found = stats.mean_difference(
                row["recipients"],
                float(row["revenue"]),
                float(row["revenue_sq"]),
                reference["recipients"],
                float(reference["revenue"]),
                float(reference["revenue_sq"]),
            )
        difference = found[0] if found else None
        unit = ""  # the metric's words already say "per recipient"
    else:
        difference = stats.proportion_difference(
            int(row[field]), row["recipients"], int(reference[field]), reference["recipients"]
        )
        unit = "points"
    text = stats.sentence(words, row["label"], reference["label"], difference, unit=unit)
    figures = difference.as_dict() if difference else {"estimate": None, "low": None, "high": None, "significant": None}
    return {"versus": reference["label"], **figures, "sentence": text}


def _winner(campaign: Campaign) -> dict[str, Any] | None:
    if campaign.winner_variant_id is None:
        return None
    action = winner_action(campaign)
    return {
        "variant": campaign.winner_variant_id,
        "label": campaign.winner_variant.label,
        "picked_at": campaign.winner_picked_at,
        "how": (action.detail or {}).get("how", "") if action else "",
        "by": action.actor if action else "",
        "significant": (action.detail or {}).get("significant") if action else None,
        "sentence": (action.detail or {}).get("why", "") if action else "",
    }
