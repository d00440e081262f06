"""Test then send the winner: pick the best variant of a test and send it to the rest of the audience.

A one-off campaign with a test share sends its variants to that share at launch; the rest of the
audience waits, held without an arm (campaigns.services.arms). After the wait, beat's
``campaigns.winners_pick`` picks the arm that leads on the campaign's metric (or staff pick one
by hand in the admin), and the waiting recipients get the winner's variant. The pick is one
conditional UPDATE of the campaign (``winner_variant IS NULL``), so two picks at once (beat
twice, beat and staff) release the audience once; each pick is audited as a CampaignAction.

Figures per arm live in reporting, which campaigns may not import: reporting registers the
function that reads them (``arm_figures_provider``) when it starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import (
    WINNER_ACTION,
    Campaign,
    CampaignAction,
    CampaignRun,
    CampaignStatus,
    RecipientState,
    RunStatus,
    Variant,
    WinnerMetric,
    WinnerPick,
    WinnerUndecided,
)
from campaigns.services import arms, dispatch, eligibility

logger = logging.getLogger(__name__)

# Set by reporting's AppConfig.ready: campaign -> reporting.arms.campaign_arms(campaign).
arm_figures_provider: Callable[[Campaign], dict[str, Any]] | None = None
LIVE = (CampaignStatus.RUNNING, CampaignStatus.PAUSED)


class WinnerError(Exception):
    pass


def winners_due(now: datetime | None = None) -> list[int]:
    """Campaigns whose test has run its wait and whose winner is picked automatically."""
    now = now or timezone.now()
    due = []
    candidates = Campaign.objects.filter(
        winner_test_share__isnull=False, winner_variant__isnull=True, winner_pick=WinnerPick.AUTO, status__in=LIVE
    ).exclude(winner_wait__isnull=True)
    for campaign in candidates:
        started = _started(campaign)
        if started is not None and started + campaign.winner_wait <= now:
            due.append(campaign.pk)
    return due


def _started(campaign: Campaign) -> datetime | None:
    """When the campaign's first run started (the test's clock)."""
    return campaign.runs.order_by("started_at").values_list("started_at", flat=True).first()


@dataclass(frozen=True)
class Lead:
    """The arm leading on the campaign's metric (or the one picked), and whether its lead is
    significant: it beats every other arm with a 95 % interval that excludes zero."""

    variant: int | None
    label: str = ""
    significant: bool = False
    sentence: str = ""


def winner_leader(campaign: Campaign, figures: dict[str, Any], chosen: int | None = None) -> Lead:
    """The leader on the campaign's metric, or ``chosen`` (a pick by hand) set against it; in one plain sentence."""
    metric = campaign.winner_metric or "replies"
    words = WinnerMetric(metric).label.lower() if metric in WinnerMetric.values else metric
    scored = []
    for row in figures["arms"]:
        if row["control"] or row["rollout"] or not row["recipients"]:
            continue
        value = row["revenue_per_recipient"] if metric == "revenue" else row["rates"].get(metric)
        if value is not None:
            scored.append((value, -row["variant"], row))
    if not scored:
        return Lead(None, sentence=f"No arm has a {words} yet.")
    scored.sort(key=lambda item: item[:2], reverse=True)
    best = scored[0][2]
    row = next((item[2] for item in scored if item[2]["variant"] == chosen), None) if chosen else best
    if row is None:
        return Lead(chosen, sentence=f"The variant picked has no {words} yet; {best['label']} leads.")
    shown = _shown(metric, scored)
    if row is not best:
        tied = next(item[0] for item in scored if item[2] is row) == scored[0][0]
        lead = "ties for the lead, not significantly," if tied else "does not lead"
        return Lead(row["variant"], row["label"], False, f"{row['label']} {lead} on {words}: {shown}.")
    others = [item[2] for item in scored[1:]]
    significant = bool(others) and all((o["versus_best"].get(metric) or {}).get("significant") for o in others)
    if significant:
        return Lead(
            row["variant"],
            row["label"],
            True,
            f"{row['label']} leads on {words} ({shown}), significantly at 95 % confidence over every other arm.",
        )
    why = "there is no other arm to compare with" if not others else "the lead may be chance"
    return Lead(
        row["variant"],
        row["label"],
        False,
        f"{row['label']} leads on {words} ({shown}), but not significantly at 95 % confidence: {why}.",
    )


def _shown(metric: str, scored: list) -> str:
    """Every measured arm's figure, the leader first: "B 14.0 %, A 10.0 %"."""

    def value(item: dict[str, Any]) -> str:
        number = item["revenue_per_recipient"] if metric == "revenue" else item["rates"][metric]
        return f"{number:.2f} per recipient" if metric == "revenue" else f"{number * 100:.1f} %"

    return ", ".join(f"{item['label']} {value(item)}" for _, _, item in scored)


def winner_pick_auto(campaign_id: int, now: datetime | None = None) -> bool:
    """Pick after the wait: the leader when its lead is significant; otherwise as the campaign's
    ``winner_undecided`` says. False when already picked or nothing can be picked yet."""
    now = now or timezone.now()
    campaign = Campaign.objects.get(pk=campaign_id)
    if campaign.winner_variant_id is not None or arm_figures_provider is None:
        return False
    figures = arm_figures_provider(campaign)
    lead = winner_leader(campaign, figures)
    if lead.variant is None:
        logger.warning("campaign %s: no winner can be picked yet (%s)", campaign_id, lead.sentence)
        return False
    variant_id, why = lead.variant, lead.sentence
    if not lead.significant:
        undecided = campaign.winner_undecided
        started = _started(campaign) or now
        if undecided == WinnerUndecided.WAIT and now < started + (campaign.winner_max_wait or timedelta()):
            logger.info("campaign %s: no significant lead yet, waiting up to %s", campaign_id, campaign.winner_max_wait)
            return False
        if undecided == WinnerUndecided.FIRST:
            first = campaign.variants.order_by("id").first()
            variant_id = first.pk
            why += f" The first variant, {first.label}, is sent, as the campaign asks when no arm leads significantly."
        elif undecided == WinnerUndecided.WAIT:
            why += f" After the longest wait ({campaign.winner_max_wait}), the leader is sent."
        else:
            why += " The leader is sent anyway, as the campaign asks."
    return winner_pick(
        campaign_id, variant_id, how=WinnerPick.AUTO, why=why, figures=figures, now=now, significant=lead.significant
    )


def winner_pick(
    campaign_id: int,
    variant_id: int,
    *,
    actor=None,
    how: str = WinnerPick.MANUAL,
    why: str = "",
    figures: dict[str, Any] | None = None,
    now: datetime | None = None,
    significant: bool | None = None,
) -> bool:
    """Make ``variant_id`` the winner and release the waiting audience with it, once.

    Returns False when a winner was already picked (nothing changes). Raises WinnerError when the
    variant is not one of the campaign's or the campaign runs no test. A pick by hand is set
    against the leader in the audit (``why``, ``significant``) as beat's is.
    """
    now = now or timezone.now()
    variant = Variant.objects.filter(pk=variant_id, campaign_id=campaign_id).first()
    if variant is None:
        raise WinnerError(f"variant {variant_id} is not one of campaign {campaign_id}'s variants")
    if significant is None and arm_figures_provider is not None:
        campaign = Campaign.objects.get(pk=campaign_id)
        figures = figures or arm_figures_provider(campaign)
        lead = winner_leader(campaign, figures, chosen=variant_id)
        significant, why = lead.significant, " ".join(part for part in (why, lead.sentence) if part)
    with transaction.atomic():
        picked = Campaign.objects.filter(
            pk=campaign_id, winner_variant__isnull=True, winner_test_share__isnull=False, status__in=LIVE
        ).update(winner_variant=variant, winner_picked_at=now)
        if not picked:
            campaign = Campaign.objects.get(pk=campaign_id)
            if campaign.winner_test_share is None:
                raise WinnerError("this campaign sends every arm at once: it has no test to pick a winner of")
            return False
        campaign = Campaign.objects.select_related("sender", "template").get(pk=campaign_id)
        released = sum(_rollout(run, campaign, variant, now) for run in campaign.runs.filter(status__in=LIVE))
        CampaignAction.objects.create(
            campaign=campaign,
            action=WINNER_ACTION,
            from_status=campaign.status,
            to_status=campaign.status,
            actor=getattr(actor, "username", "") or (actor if isinstance(actor, str) else ""),
            detail={
                "variant": variant.pk,
                "label": variant.label,
                "how": str(how),
                "metric": campaign.winner_metric,
                "why": why,
                "significant": bool(significant),
                "released": released,
                "rates": _rates(figures),
            },
        )
    return True


def _rates(figures: dict[str, Any] | None) -> dict[str, Any]:
    if not figures:
        return {}
    return {row["label"]: row["rates"] for row in figures["arms"] if not row["rollout"]}


def _rollout(run: CampaignRun, campaign: Campaign, variant: Variant, now: datetime) -> int:
    """The run's waiting recipients get the winner: pending, or held to the end of their quiet hours."""
    status = CampaignRun.objects.select_for_update().values_list("status", flat=True).get(pk=run.pk)
    if status not in (RunStatus.RUNNING, RunStatus.PAUSED):
        return 0
    params = eligibility.Params()
    quiet_sql = eligibility.quiet_join(campaign, now, params)
    held, pending = params.add("held", RecipientState.HELD.value), params.add("pending", RecipientState.PENDING.value)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE campaigns_recipient r SET arm = {params.add("variant", variant.pk)}, rollout = true,
                release_at = x.release_at,
                state = CASE WHEN x.release_at IS NOT NULL THEN {held} ELSE {pending} END
            FROM (
                SELECT w.id, q.release_at FROM campaigns_recipient w
                LEFT JOIN audience_contact ON audience_contact.id = w.contact_id
                {quiet_sql}
                WHERE w.run_id = {params.add("run", run.pk)} AND w.state = {held} AND w.arm IS NULL
                    AND w.release_at IS NULL
            ) x
            WHERE r.id = x.id AND r.state = {held} AND r.arm IS NULL
            RETURNING r.state""",
            params,
        )
        states = Counter(state for (state,) in cursor.fetchall())
    released = sum(states.values())
    pending = states[RecipientState.PENDING]
    dispatch.run_counters_move(run.pk, {"held": -pending, "pending": pending})
    arms.sizes_add(run.pk, Counter({f"rollout:{variant.pk}": released, arms.WAITING: -released}))
    if pending and status == RunStatus.RUNNING:
        dispatch.dispatch_start(run.pk)  # after commit
    return released
