"""Campaign lifecycle: the status machine, its audit list, schedules and launches."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from audience.services import actor_name
from campaigns.models import (
    Campaign,
    CampaignAction,
    CampaignKind,
    CampaignRun,
    CampaignStatus,
    RecipientState,
    RunStatus,
    ScheduleType,
    SkipReason,
)
from campaigns.services import arms, cost, dispatch
from campaigns.services import events as triggers
from campaigns.services import snapshot as snapshots
from campaigns.services.attribution import goal_errors
from campaigns.services.schedules import campaign_sync_schedule, crontab_fields

# Which status may follow which. Anything else is refused.
TRANSITIONS: dict[str, set[str]] = {
    CampaignStatus.DRAFT: {CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.CANCELLED},
    CampaignStatus.SCHEDULED: {
        CampaignStatus.DRAFT,
        CampaignStatus.RUNNING,
        CampaignStatus.PAUSED,
        CampaignStatus.CANCELLED,
    },
    CampaignStatus.RUNNING: {
        CampaignStatus.PAUSED,
        CampaignStatus.COMPLETED,
        CampaignStatus.SCHEDULED,
        CampaignStatus.CANCELLED,
        CampaignStatus.FAILED,
    },
    CampaignStatus.PAUSED: {CampaignStatus.RUNNING, CampaignStatus.SCHEDULED, CampaignStatus.CANCELLED},
    CampaignStatus.COMPLETED: set(),
    CampaignStatus.CANCELLED: set(),
    CampaignStatus.FAILED: set(),
}
# A resend of unknown outcomes (staff) reopens a finished campaign: the only way out of completed.
RESEND_TRANSITIONS: dict[str, set[str]] = {CampaignStatus.COMPLETED: {CampaignStatus.RUNNING}}


class CampaignError(ValidationError):
    """A campaign action was refused; the message says why."""


def audit_actor(actor) -> str:
    return actor_name(actor) or "system"


def _transition(campaign: Campaign, to: str, *, action: str, actor=None, detail: dict | None = None) -> Campaign:
    """Move the campaign to ``to`` if allowed from its current (locked) status, and audit it."""
    locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
    allowed = TRANSITIONS[locked.status]
    if action == "resend":
        allowed = allowed | RESEND_TRANSITIONS.get(locked.status, set())
    if to not in allowed:
        raise CampaignError(f"cannot {action} a {locked.get_status_display().lower()} campaign")
    CampaignAction.objects.create(
        campaign=locked,
        action=action,
        from_status=locked.status,
        to_status=to,
        actor=audit_actor(actor),
        detail=detail or {},
    )
    locked.status = to
    locked.save(update_fields=["status", "updated_at"])
    campaign.status = to
    return locked


def campaign_validate(campaign: Campaign, variants: list[arms.VariantSpec] | None = None) -> None:
    """Refuse a campaign that cannot work, naming the field (``variants[i].field``: one of ``variants``)."""
    errors: dict[str, list[str]] = {}
    sender = campaign.sender
    if campaign.mps and campaign.mps > sender.effective_mps:
        errors["mps"] = [f"{campaign.mps} is above the sender's limit of {sender.effective_mps} messages per second"]
    if campaign.template.channel != sender.channel:
        errors["template"] = [f"a {campaign.template.channel} template cannot go through a {sender.channel} sender"]
    if campaign.schedule_type == ScheduleType.ONCE and not campaign.send_at:
        errors["send_at"] = ["choose when to send it: a campaign sent once needs a date and time (Send at)"]
    if campaign.schedule_type == ScheduleType.CRON:
        try:
            crontab_fields(campaign.cron)
        except ValueError as exc:
            errors["cron"] = [str(exc)]
        try:
            zoneinfo.ZoneInfo(campaign.cron_timezone or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            errors["cron_timezone"] = [f"{campaign.cron_timezone!r} is not an IANA time zone"]
    if campaign.kind == CampaignKind.RECURRING and campaign.schedule_type != ScheduleType.CRON:
        errors["schedule_type"] = ["a recurring campaign is scheduled by cron"]
    if (campaign.quiet_start is None) != (campaign.quiet_end is None):
        errors["quiet_end" if campaign.quiet_end is None else "quiet_start"] = ["set both ends of the quiet hours"]
    if campaign.frequency_cap and not campaign.frequency_window:
        errors["frequency_window"] = ["a frequency cap needs a window"]
    errors.update(triggers.trigger_errors(campaign))
    errors.update(goal_errors(campaign))
    errors.update(arms.experiment_errors(campaign, variants, indexed=variants is not None))
    if errors:
        raise CampaignError(errors)


@transaction.atomic
def campaign_schedule(campaign: Campaign, *, actor=None) -> Campaign:
    """Schedule a draft as stored (send now launches it at once)."""
    current = Campaign.objects.select_for_update().select_related("template", "sender").get(pk=campaign.pk)
    campaign_validate(current)
    if current.schedule_type == ScheduleType.NOW:
        campaign_launch(current, actor=actor)
    else:
        if current.schedule_type == ScheduleType.ONCE and current.send_at <= timezone.now():
            raise CampaignError({"send_at": ["the time to send it (Send at) has passed; choose a later one"]})
        current = _transition(current, CampaignStatus.SCHEDULED, action="schedule", actor=actor)
        campaign_sync_schedule(current)
    campaign.refresh_from_db()
    return campaign


@transaction.atomic
def campaign_create(*, actor=None, variants: list[arms.VariantSpec] | None = None, **fields) -> Campaign:
    """Create a draft campaign (with its experiment's ``variants``) after checking it can work."""
    campaign = Campaign(**fields)
    if actor is not None and not isinstance(actor, str):
        campaign.created_by = actor
    campaign_validate(campaign, variants)
    try:
        with transaction.atomic():
            campaign.save()
    except IntegrityError:
        raise CampaignError({"name": [f"a campaign named {campaign.name!r} already exists"]}) from None
    detail = {"variants": arms.variants_write(campaign, variants)} if variants else {}
    CampaignAction.objects.create(
        campaign=campaign, action="create", to_status=campaign.status, actor=audit_actor(actor), detail=detail
    )
    return campaign


# What a duplicate takes over: the campaign's settings, not its state, schedule task or history.
@transaction.atomic
def campaign_delete(campaign: Campaign) -> None:
    """Delete a draft or cancelled campaign with its PeriodicTask."""
    locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if locked.status not in (CampaignStatus.DRAFT, CampaignStatus.CANCELLED):
        raise CampaignError({"status": ["only draft or cancelled campaigns can be deleted"]})
    if locked.periodic_task_id:
        PeriodicTask.objects.filter(pk=locked.periodic_task_id).delete()
    locked.delete()


@transaction.atomic
def campaign_update(
    campaign: Campaign, *, actor=None, variants: list[arms.VariantSpec] | None = None, **fields
) -> Campaign:
    """Edit a campaign that has not finished, keeping its PeriodicTask in step. ``variants`` replace
    the experiment's (``arms.variants_write``) while it has not launched."""
    locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if locked.status in (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED, CampaignStatus.FAILED):
        raise CampaignError(f"a {locked.get_status_display().lower()} campaign cannot be edited")
    variants = variants if variants is not None and arms.variants_differ(locked, variants) else None
    if variants is not None and (frozen := arms.variants_frozen(locked)):
        raise CampaignError({"variants": [frozen]})
    if shares_frozen := arms.arm_shares_frozen(locked, fields):
        raise CampaignError(shares_frozen)
    for name, value in fields.items():
        setattr(locked, name, value)
    campaign_validate(locked, variants)
    locked.save()
    detail: dict = {"fields": sorted([*fields, *(["variants"] if variants is not None else [])])}
    if variants is not None:
        detail["variants"] = arms.variants_write(locked, variants)
    CampaignAction.objects.create(
        campaign=locked,
        action="edit",
        from_status=locked.status,
        to_status=locked.status,
        actor=audit_actor(actor),
        detail=detail,
    )
    campaign_sync_schedule(locked)
    campaign.refresh_from_db()
    return campaign


def campaign_launch(
    campaign: Campaign, *, scheduled_for: dt.datetime | None = None, actor=None, now: dt.datetime | None = None
) -> CampaignRun:
    """Start a run: snapshot the recipients in SQL. One run per (campaign, scheduled_for).

    A second launch for the same tick (two beat processes) returns the first run: the unique
    constraint on (campaign, scheduled_for) decides. A "launch now" (no scheduled_for) while a
    run is running returns that run, whatever second the click lands in.
    """
    now = now or timezone.now()
    manual = scheduled_for is None
    scheduled_for = scheduled_for or now.replace(microsecond=0)
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().select_related("template", "sender").get(pk=campaign.pk)
        existing = CampaignRun.objects.filter(campaign=locked, scheduled_for=scheduled_for).first()
        if manual and existing is None:
            # "Launch now" while a run is running (a double click a second apart, a retried request)
            # lands on that run instead of starting another or failing.
            existing = (
                CampaignRun.objects.filter(campaign=locked, status=RunStatus.RUNNING).order_by("-scheduled_for").first()
            )
        if existing:
            return existing
        if locked.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.RUNNING):
            raise CampaignError(f"cannot launch a {locked.get_status_display().lower()} campaign")
        if locked.status == CampaignStatus.RUNNING and locked.kind == CampaignKind.ONE_OFF:
            raise CampaignError("this one-off campaign is already running")
        campaign_validate(locked)
        if errors := arms.experiment_launch_errors(locked):
            raise CampaignError(errors)
        if locked.kind == CampaignKind.TRIGGERED and (open_run := triggers.trigger_run(locked)):
            return open_run  # one long-lived run per triggered campaign
        try:
            with transaction.atomic():
                run = CampaignRun.objects.create(
                    campaign=locked, scheduled_for=scheduled_for, mps=locked.mps or locked.sender.effective_mps
                )
        except IntegrityError:
            return CampaignRun.objects.get(campaign=locked, scheduled_for=scheduled_for)
        started = time.perf_counter()
        # A triggered campaign snapshots nobody: its events add recipients to this run as they come.
        triggered = locked.kind == CampaignKind.TRIGGERED
        counts = {} if triggered else snapshots.snapshot_insert(run.pk, snapshots.snapshot_query(locked, now))
        _store_counts(run, counts, time.perf_counter() - started)
        if manual and not triggered and run.pending == 0 and run.held == 0:
            # Staff asked to send now and nobody would get it: say why; the transaction takes the run back.
            raise CampaignError(f"nobody would receive this campaign now: {_nobody_reasons(run)}")
        if run.total >= snapshots.ANALYZE_AFTER:  # before the dispatchers start (also at commit)
            transaction.on_commit(snapshots.recipients_analyze, robust=True)
        if not triggered:
            cost.run_cost_estimate_enqueue(run.pk)
        if locked.status != CampaignStatus.RUNNING:
            locked = _transition(locked, CampaignStatus.RUNNING, action="launch", actor=actor, detail={"run": run.pk})
            campaign_sync_schedule(locked)  # a one-off schedule has fired: its task goes
        else:
            CampaignAction.objects.create(
                campaign=locked,
                action="launch",
                from_status=CampaignStatus.RUNNING,
                to_status=CampaignStatus.RUNNING,
                actor=audit_actor(actor),
                detail={"run": run.pk},
            )
        if run.pending == 0 and run.held == 0:
            run_complete(run)
        elif run.pending:
            dispatch.dispatch_start(run.pk)  # after commit
    campaign.status = Campaign.objects.values_list("status", flat=True).get(pk=campaign.pk)
    return run


def skip_reason_label(reason: str) -> str:
    """A skip reason in words ("Missing variable", "Opted out"), whatever its stored code."""
    return SkipReason(reason).label if reason in SkipReason.values else reason.replace("_", " ").capitalize()


def _nobody_reasons(run: CampaignRun) -> str:
    if not run.total:
        return "the audience is empty (no contact matches the segment, the topic and consent)"
    reasons = sorted(run.skipped_by_reason.items(), key=lambda item: -item[1])
    return ", ".join(f"{count} excluded: {skip_reason_label(reason).lower()}" for reason, count in reasons)


def _store_counts(run: CampaignRun, counts: dict[tuple[str, str], int], seconds: float) -> None:
    by_state: dict[str, int] = {}
    skipped_by_reason: dict[str, int] = {}
    for (state, reason), count in counts.items():
        by_state[state] = by_state.get(state, 0) + count
        if state == RecipientState.SKIPPED:
            skipped_by_reason[reason] = skipped_by_reason.get(reason, 0) + count
    run.total = sum(by_state.values())
    run.pending = by_state.get(RecipientState.PENDING, 0)
    run.held = by_state.get(RecipientState.HELD, 0)
    run.skipped = by_state.get(RecipientState.SKIPPED, 0)
    run.skipped_by_reason = skipped_by_reason
    run.snapshot_seconds = round(seconds, 3)
    run.save(update_fields=["total", "pending", "held", "skipped", "skipped_by_reason", "snapshot_seconds"])


@transaction.atomic
def run_complete(run: CampaignRun) -> None:
    """Close a run whose recipients are all final; a one-off campaign completes with it.

    A triggered campaign's run stays open for the next event; cancelling the campaign closes it.
    """
    if run.campaign.kind == CampaignKind.TRIGGERED:
        return
    updated = CampaignRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        status=RunStatus.COMPLETED, finished_at=timezone.now()
    )
    if not updated:
        return
    campaign = run.campaign
    others_active = campaign.runs.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED]).exists()
    if campaign.status == CampaignStatus.RUNNING and not others_active:
        next_status = (
            CampaignStatus.SCHEDULED if campaign.schedule_type == ScheduleType.CRON else CampaignStatus.COMPLETED
        )
        locked = _transition(campaign, next_status, action="complete", detail={"run": run.pk})
        campaign_sync_schedule(locked)


@transaction.atomic
def campaign_pause(campaign: Campaign, *, actor=None) -> Campaign:
    locked = _transition(campaign, CampaignStatus.PAUSED, action="pause", actor=actor)
    locked.runs.filter(status=RunStatus.RUNNING).update(status=RunStatus.PAUSED)
    campaign_sync_schedule(locked)
    return locked


@transaction.atomic
def campaign_resume(campaign: Campaign, *, actor=None) -> Campaign:
    current = Campaign.objects.select_for_update().get(pk=campaign.pk)
    paused_runs = current.runs.filter(status=RunStatus.PAUSED)
    target = CampaignStatus.RUNNING if paused_runs.exists() else CampaignStatus.SCHEDULED
    locked = _transition(current, target, action="resume", actor=actor)
    resumed = list(paused_runs.values_list("pk", flat=True))
    paused_runs.update(status=RunStatus.RUNNING)
    for run_id in resumed:
        dispatch.dispatch_start(run_id)  # after commit
    campaign_sync_schedule(locked)
    return locked


@transaction.atomic
def campaign_cancel(campaign: Campaign, *, actor=None) -> Campaign:
    """Cancel: nothing more is sent; waiting recipients are skipped as cancelled."""
    locked = _transition(campaign, CampaignStatus.CANCELLED, action="cancel", actor=actor)
    active_runs = list(locked.runs.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED]))
    for run in active_runs:
        run_cancel(run)
    campaign_sync_schedule(locked)
    return locked


def run_cancel(run: CampaignRun) -> None:
    from campaigns.models import Recipient, SkipReason

    run = CampaignRun.objects.select_for_update().get(pk=run.pk)  # dispatchers move its counters too
    cancelled = Recipient.objects.filter(run=run, state__in=[RecipientState.PENDING, RecipientState.HELD]).update(
        state=RecipientState.SKIPPED, reason=SkipReason.CANCELLED, release_at=None
    )
    counts = run.skipped_by_reason or {}
    counts[SkipReason.CANCELLED] = counts.get(SkipReason.CANCELLED, 0) + cancelled
    CampaignRun.objects.filter(pk=run.pk).update(
        status=RunStatus.CANCELLED,
        finished_at=timezone.now(),
        pending=0,
        held=0,
        skipped=run.skipped + cancelled,
        skipped_by_reason=counts,
    )
    from campaigns.services.outcomes import run_sends_unknown

    run_sends_unknown(run)  # sends no live request will answer any more: unknown, not `sending`


@transaction.atomic
def run_reopen(run: CampaignRun, *, actor=None, detail: dict | None = None) -> CampaignRun:
    """Staff resend unknown outcomes of a finished run: it runs again (paused if its campaign is), audited.

    A completed campaign runs again through the lifecycle's one extra transition (completed ->
    running, action "resend"); a scheduled cron campaign runs as when a tick fires. A cancelled
    run or campaign is refused: cancelling means nothing more is sent.
    """
    run = CampaignRun.objects.select_for_update().select_related("campaign").get(pk=run.pk)
    campaign = Campaign.objects.select_for_update().get(pk=run.campaign_id)
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.COMPLETED):
        raise CampaignError({"action": [f"run {run.pk} was {run.status}: its messages cannot be resent"]})
    if campaign.status in (CampaignStatus.CANCELLED, CampaignStatus.FAILED):
        raise CampaignError({"action": [f"the campaign is {campaign.status}: its messages cannot be resent"]})
    detail = {"run": run.pk, **(detail or {})}
    if run.status == RunStatus.COMPLETED:
        run.status = RunStatus.PAUSED if campaign.status == CampaignStatus.PAUSED else RunStatus.RUNNING
        run.finished_at = None
        run.save(update_fields=["status", "finished_at"])
        detail["reopened"] = True
    if campaign.status in (CampaignStatus.COMPLETED, CampaignStatus.SCHEDULED) and run.status == RunStatus.RUNNING:
        campaign = _transition(campaign, CampaignStatus.RUNNING, action="resend", actor=actor, detail=detail)
        campaign_sync_schedule(campaign)
    else:
        CampaignAction.objects.create(
            campaign=campaign,
            action="resend",
            from_status=campaign.status,
            to_status=campaign.status,
            actor=audit_actor(actor),
            detail=detail,
        )
    if run.status == RunStatus.RUNNING:
        dispatch.dispatch_start(run.pk)  # after commit
    return run
