"""Experiment arms: which variant (or the control group) each recipient of a campaign gets.

Assignment is deterministic per (campaign, contact): the first 32 bits of
md5("<campaign id>:<contact id>") as a number ``h`` in [0, 2^32) are mapped over the arms'
cumulative shares. The control group takes the first ``control_share`` percent, a winner
test's arms the next ``winner_test_share`` percent (the rest waits for the winner, arm NULL),
and otherwise the arms share everything after the control group, each by its weight. One SQL
expression (``arm_sql``) does it, inside the eligibility rule (``campaigns.services.eligibility``)
that decides a launch's snapshot and a triggered campaign's answers alike, so both paths agree
by construction and no contact is looped over in Python.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection

from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStatus,
    RecipientState,
    SkipReason,
    Variant,
    WinnerUndecided,
)
from messaging.models import MessageTemplate

CONTROL_ARM = 0  # Recipient.arm of the control group (variant ids start at 1)
HASH_SPACE = 2**32
MIN_VARIANTS, MAX_VARIANTS = 2, 5
WAITING = "waiting"  # arm_sizes key of recipients held for a test's winner


@dataclass(frozen=True)
class ArmPlan:
    """Upper bounds on ``h`` and the arm each range gets (None: waits for the winner)."""

    bounds: tuple[tuple[int, int | None], ...]

    @property
    def waits_for_winner(self) -> bool:
        return any(arm is None for _, arm in self.bounds)


def arm_plan(campaign: Campaign, variants: list[Variant] | None = None) -> ArmPlan | None:
    """The campaign's arms over the hash space, or None when it runs no experiment."""
    variants = list(campaign.variants.order_by("id")) if variants is None else variants
    if not variants:
        return None
    control = campaign.control_share / 100
    tested = campaign.winner_test_share / 100 if campaign.winner_test_share else 1 - control
    bounds: list[tuple[int, int | None]] = []
    if control:
        bounds.append((round(control * HASH_SPACE), CONTROL_ARM))
    total_weight = sum(variant.weight for variant in variants)
    cumulative = 0
    for variant in variants:
        cumulative += variant.weight
        bounds.append((round((control + tested * cumulative / total_weight) * HASH_SPACE), variant.pk))
    if campaign.winner_test_share:
        bounds.append((HASH_SPACE, None))
    else:  # the last arm ends at the top, whatever the float rounding
        bounds[-1] = (HASH_SPACE, bounds[-1][1])
    return ArmPlan(tuple(bounds))


@dataclass(frozen=True)
class ArmSql:
    """The arm of each row as SQL: ``join`` goes in the FROM clause (after the table holding the
    contact id), ``expression`` in the select list. The hash sits in a LATERAL subquery behind
    ``OFFSET 0`` so it is computed once per row: inlined, md5 ran once per WHEN of every
    reference to the arm (seven times slower at 1M contacts)."""

    join: str
    join_params: list
    expression: str
    params: list


def arm_sql(
    campaign: Campaign, contact_id_sql: str = "audience_contact.id", variants: list[Variant] | None = None
) -> ArmSql:
    """SQL giving the arm of the contact whose id is ``contact_id_sql`` (NULL: no arm yet).

    ``variants``: the campaign's variants when the caller has loaded them (None: read here).
    """
    plan = arm_plan(campaign, variants)
    if plan is None:
        return ArmSql("", [], "NULL::bigint", [])
    cases, params = [], []
    for bound, arm in plan.bounds:
        cases.append("WHEN arm_h.h < %s THEN %s::bigint")
        params += [bound, arm]
    hashed = f"('x' || substr(md5(%s || ':' || {contact_id_sql}::text), 1, 8))::bit(32)::bigint"
    join = f"CROSS JOIN LATERAL (SELECT {hashed} AS h OFFSET 0) AS arm_h"
    return ArmSql(join, [str(campaign.pk)], f"CASE {' '.join(cases)} END", params)


def arms_for_contacts(campaign: Campaign, contact_ids: Iterable[int]) -> dict[int, int | None]:
    """{contact_id: arm} for a triggered campaign's event contacts, by the snapshot's expression."""
    ids = sorted(set(contact_ids))
    arm = arm_sql(campaign, "c.id")
    if not ids or not arm.join:
        return dict.fromkeys(ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id, {arm.expression} FROM unnest(%s::bigint[]) AS c (id) {arm.join}",
            [*arm.params, ids, *arm.join_params],
        )
        return dict(cursor.fetchall())


def arm_key(arm: int | None) -> str:
    return WAITING if arm is None else str(arm)


def sizes_add(run_id: int, sizes: Counter[str]) -> None:
    """Add eligible recipients by arm key to the run's ``arm_sizes`` in one UPDATE."""
    sizes = Counter({key: count for key, count in sizes.items() if count})
    if not sizes:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE campaigns_campaignrun SET arm_sizes = COALESCE(arm_sizes, '{}'::jsonb) || ("
            " SELECT jsonb_object_agg(a.arm, COALESCE((arm_sizes ->> a.arm)::int, 0) + a.n)"
            " FROM unnest(%s::text[], %s::int[]) AS a (arm, n)) WHERE id = %s",
            [list(sizes), list(sizes.values()), run_id],
        )


def eligible(state: str, reason: str) -> bool:
    """Counted in its arm's size: would have been sent (pending or held), or held out as control."""
    return state in (RecipientState.PENDING, RecipientState.HELD) or reason == SkipReason.CONTROL


def templates_by_arm(campaign: Campaign) -> dict[int | None, MessageTemplate]:
    """The template each arm sends; recipients without an arm send the campaign's own."""
    templates: dict[int | None, MessageTemplate] = {None: campaign.template}
    for variant in campaign.variants.select_related("template"):
        templates[variant.pk] = variant.template
    return templates


def campaign_templates(campaign: Campaign, variants: list[Variant] | None = None) -> list[MessageTemplate]:
    """Every template the campaign may send (``variants``: its variants with their templates, when
    loaded). The eligibility rule's checks (missing variable, WhatsApp window) apply the union of
    them to every contact, so no arm loses contacts another keeps."""
    if variants is None:
        variants = list(campaign.variants.select_related("template"))
    return [variant.template for variant in variants] or [campaign.template]


# --- Validation ------------------------------------------------------------------------------


VariantSpec = tuple[str, MessageTemplate | None, int | None]  # (label, template, weight)
Problem = tuple[int | None, str, str]  # (the variant's index, or None for the set; its field; in words)


def variant_problems(variants: list[VariantSpec], channel: str | None = None) -> list[Problem]:
    """Problems with a campaign's variants, each with the variant and the field it is about; [] when fine.

    ``channel``: the sender's, which every variant's template must share.
    """
    if not variants:
        return []
    problems: list[Problem] = []
    if not MIN_VARIANTS <= len(variants) <= MAX_VARIANTS:
        problems.append((None, "", f"an experiment has {MIN_VARIANTS} to {MAX_VARIANTS} variants, not {len(variants)}"))
    seen: set[str] = set()
    for index, (label, template, weight) in enumerate(variants):
        key = label.strip().lower()
        if not key:
            problems.append((index, "label", f"variant {index + 1} needs a label"))
        elif key in seen:
            problems.append((index, "label", f"the label {key!r} is used twice: each variant needs its own"))
        seen.add(key)
        if template is None:
            problems.append((index, "template", f"variant {label!r} needs a template"))
        elif channel and template.channel != channel:
            problems.append(
                (
                    index,
                    "template",
                    f"variant {label!r}: a {template.channel} template cannot go through a {channel} sender",
                )
            )
        if weight is None or not 1 <= weight <= 100:
            problems.append(
                (index, "weight", f"variant {label!r}: the weight must be a whole number from 1 to 100, not {weight}")
            )
    return problems


def variants_errors(variants: list[VariantSpec]) -> list[str]:
    """Problems with a campaign's variants as (label, template, weight), in words; [] when fine."""
    return list(dict.fromkeys(words for _, _, words in variant_problems(variants)))


def problems_by_field(problems: list[Problem], *, indexed: bool) -> dict[str, list[str]]:
    """{"variants": [...]} (the admin's inline), or by ``variants[i].field`` (a list sent to the API)."""
    errors: dict[str, list[str]] = {}
    for index, field, words in problems:
        key = f"variants[{index}].{field}" if indexed and index is not None else "variants"
        if words not in errors.setdefault(key, []):
            errors[key].append(words)
    return errors


def variants_frozen(campaign: Campaign) -> str:
    """Why the campaign's variants can no longer change ('' while they can): recipients carry their ids."""
    if campaign.pk is None:
        return ""
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED) or campaign.runs.exists():
        return "the variants are fixed once the campaign has launched: its recipients carry their ids"
    return ""


ARM_SHARES = ("control_share", "winner_test_share")


def arm_shares_frozen(campaign: Campaign, changes: dict) -> dict[str, list[str]]:
    """Errors for changed shares of a launched experiment: every recipient's arm was drawn with them."""
    changed = [name for name in ARM_SHARES if name in changes and changes[name] != getattr(campaign, name)]
    if not changed or not variants_frozen(campaign) or not campaign.variants.exists():
        return {}
    reason = "the shares are fixed once the experiment has launched: its recipients' arms were drawn with them"
    return {name: [reason] for name in changed}


def experiment_errors(
    campaign: Campaign, variants: list[VariantSpec] | None = None, *, indexed: bool = False
) -> dict[str, list[str]]:
    """Problems with the campaign's experiment settings, by field; {} when fine.

    ``variants`` as (label, template, weight), e.g. from a form not saved yet; the stored ones
    otherwise. ``indexed``: name each variant's problem ``variants[i].field`` (the API's list).
    Settings that need variants (a control group, a test) are refused without them only at launch
    (``experiment_launch_errors``): staff may save the settings before the variants.
    """
    if variants is None:
        stored = Variant.objects.filter(campaign_id=campaign.pk).select_related("template") if campaign.pk else []
        variants = [(v.label, v.template, v.weight) for v in stored]
    channel = campaign.sender.channel if campaign.sender_id else None
    errors = problems_by_field(variant_problems(variants, channel), indexed=indexed)
    if not 0 <= (campaign.control_share or 0) <= 50:
        errors["control_share"] = [f"the control group is 0 to 50 % of the audience, not {campaign.control_share}"]
    if campaign.winner_test_share is not None:
        errors.update(_winner_errors(campaign))
    return errors


def experiment_launch_errors(campaign: Campaign) -> dict[str, list[str]]:
    """A control group or a test without variants to compare cannot launch."""
    if Variant.objects.filter(campaign_id=campaign.pk).exists():
        return {}
    errors = {}
    if campaign.control_share:
        errors["control_share"] = ["a control group needs 2-5 variants to compare with"]
    if campaign.winner_test_share is not None:
        errors["winner_test_share"] = ["a test needs 2-5 variants to pick a winner from"]
    return errors


def _winner_errors(campaign: Campaign) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not 5 <= campaign.winner_test_share <= 50:
        errors["winner_test_share"] = [f"the test goes to 5 to 50 % of the audience, not {campaign.winner_test_share}"]
    elif campaign.kind != CampaignKind.ONE_OFF:
        errors["winner_test_share"] = ["test then send the winner works for one-off campaigns only"]
    if not campaign.winner_wait or campaign.winner_wait.total_seconds() <= 0:
        errors["winner_wait"] = ["say how long to wait before picking the winner, e.g. 4:00:00"]
    elif campaign.validity and campaign.winner_wait >= campaign.validity:
        errors["winner_wait"] = ["the wait must end before the validity period, or the rest would expire unsent"]
    if not campaign.winner_metric:
        errors["winner_metric"] = ["choose the metric the winner is picked on"]
    if campaign.winner_undecided == WinnerUndecided.WAIT and "winner_wait" not in errors:
        longest = campaign.winner_max_wait
        if not longest or longest <= campaign.winner_wait:
            errors["winner_max_wait"] = ["to keep waiting for a significant lead, give a longest wait past the wait"]
        elif campaign.validity and longest >= campaign.validity:
            errors["winner_max_wait"] = ["the longest wait must end before the validity period"]
    return errors


# --- Triggered campaigns (campaigns.services.events) ---------------------------------------------


def answers_messages_create(campaign: Campaign, sending: list, source_type) -> dict[int, int]:
    """Pending messages of a triggered run's new recipients, each with its arm's template.

    ``sending`` holds (recipient, event) pairs; returns {recipient id: message id}.
    """
    from messaging.services import create as create_service

    templates = templates_by_arm(campaign)
    by_arm: dict[int | None, list] = {}
    for recipient, event in sending:
        by_arm.setdefault(recipient.arm, []).append((recipient, event))
    created: dict[int, int] = {}
    for arm, group in by_arm.items():
        created |= create_service.messages_create_for_sources(
            template=templates.get(arm, campaign.template),
            sender=campaign.sender,
            source_type=source_type,
            sources=[(recipient.pk, recipient.contact_id) for recipient, _ in group],
            contexts=[event.properties for _, event in group],
        )
    return created


def answers_sizes_add(run_id: int, recipients: Iterable) -> None:
    sizes = Counter(arm_key(r.arm) for r in recipients if r.arm is not None and eligible(r.state, r.reason))
    sizes_add(run_id, sizes)


# --- Writes (the API's list of variants; the admin's inline saves through its formset) --------


def variants_differ(campaign: Campaign, variants: list[VariantSpec]) -> bool:
    """Whether ``variants`` would change the stored ones, in any order (sending back what was read changes nothing)."""
    stored = sorted((v.label, v.template_id, v.weight) for v in campaign.variants.all())
    return stored != sorted((label.strip(), getattr(t, "pk", None), weight) for label, t, weight in variants)


def variants_write(campaign: Campaign, variants: list[VariantSpec]) -> list[dict]:
    """Make the stored variants ``variants`` (checked already). A variant is matched by its label,
    any case, and keeps its id (the API lists them by id); the others are created, the missing
    ones deleted. Returns them as the audit records them."""
    stored = {v.label.strip().lower(): v for v in campaign.variants.all()}
    wanted = {label.strip().lower() for label, _, _ in variants}
    Variant.objects.filter(pk__in=[v.pk for key, v in stored.items() if key not in wanted]).delete()
    for label, template, weight in variants:
        variant = stored.get(label.strip().lower()) or Variant(campaign=campaign)
        variant.label, variant.template, variant.weight = label.strip(), template, weight
        variant.save()
    return [{"label": label.strip(), "template": getattr(t, "pk", None), "weight": w} for label, t, w in variants]
