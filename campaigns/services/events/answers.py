"""Answering matches: one recipient per (event, campaign) in the campaign's run, with a launch's decisions."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from audience.models import ConsentStatus, Contact
from campaigns.models import (
    Campaign,
    CampaignRun,
    Recipient,
    RecipientState,
    RunStatus,
    SkipReason,
)
from campaigns.quiet_hours import quiet_release_at
from campaigns.services import arms, dispatch
from campaigns.services.snapshot import CAP_STATES
from messaging.services import create as create_service
from messaging.services import send as send_service
from messaging.services.templates import template_render

if TYPE_CHECKING:
    from campaigns.services.events.matching import ClaimedEvent

logger = logging.getLogger(__name__)


R = RecipientState


# --- Answering: recipients in the campaigns' runs ------------------------------------------


def trigger_run(campaign: Campaign, *, lock: bool = False) -> CampaignRun | None:
    """The open (running or paused) run of a triggered campaign."""
    runs = CampaignRun.objects.filter(campaign=campaign, status__in=[RunStatus.RUNNING, RunStatus.PAUSED])
    if lock:
        runs = runs.select_for_update()
    return runs.order_by("-started_at", "-id").first()


def answers_add(pairs: list[tuple[ClaimedEvent, Campaign]], contacts: dict[int, Contact], *, now: dt.datetime) -> None:
    """One recipient per match in its campaign's run, with the launch snapshot's decisions.

    Decided in event order, then campaign order, as if the events had come one at a time: an
    earlier answer to a contact counts against the frequency cap of a later one. Each run row
    is locked first, so a cancel either sees these recipients (and skips them) or comes after.
    """
    campaigns = {campaign.pk: campaign for _, campaign in pairs}
    runs = {pk: trigger_run(campaign, lock=True) for pk, campaign in campaigns.items()}
    for pk, run in runs.items():
        if run is None:
            logger.warning("triggered campaign %s has no open run; its events are not answered", pk)
    pairs = [(event, campaign) for event, campaign in pairs if runs[campaign.pk] is not None]
    sender_errors = {pk: _sender_error(campaign) for pk, campaign in campaigns.items()}
    recent = _recent_counts(pairs)
    answer_arms = arms.answers_arms(pairs)
    added: Counter[int] = Counter()
    rows: dict[int, list[tuple[Recipient, ClaimedEvent]]] = {}
    for event, campaign in pairs:
        contact = contacts.get(event.contact_id)
        if contact is None:  # deleted since the event was stored (its events went with it)
            continue
        window = campaign.frequency_window if campaign.frequency_cap else None
        capped = bool(window) and recent[window][contact.pk] + added[contact.pk] >= campaign.frequency_cap
        state, reason, detail, release_at = recipient_decide(campaign, event, contact, now, capped=capped)
        if state in (R.PENDING, R.HELD) and sender_errors[campaign.pk]:  # e.g. the sender was deactivated
            state, reason, detail, release_at = R.FAILED, "sender", sender_errors[campaign.pk], None
        arm = answer_arms.get((campaign.pk, contact.pk))
        state, reason, detail, release_at = arms.decision_for_arm((state, reason, detail, release_at), arm)
        if state in CAP_STATES:
            added[contact.pk] += 1
        recipient = Recipient(
            run=runs[campaign.pk],
            contact_id=contact.pk,
            event_id=event.pk,
            arm=arm,
            state=state,
            reason=reason,
            detail=detail,
            release_at=release_at,
        )
        rows.setdefault(campaign.pk, []).append((recipient, event))
    for pk, answers in rows.items():
        _run_answers_insert(campaigns[pk], runs[pk], answers)


def _sender_error(campaign: Campaign) -> str:
    try:
        create_service.sender_for_template(campaign.template, campaign.sender)
    except create_service.MessageRequestError as exc:
        return "; ".join(exc.messages)[:255]
    return ""


def _recent_counts(pairs: list[tuple[ClaimedEvent, Campaign]]) -> dict[dt.timedelta, Counter[int]]:
    """For each frequency window among the campaigns: the contacts' capped-state recipients within it."""
    windows: dict[dt.timedelta, set[int]] = {}
    for event, campaign in pairs:
        if campaign.frequency_cap and campaign.frequency_window:
            windows.setdefault(campaign.frequency_window, set()).add(event.contact_id)
    now = timezone.now()
    counts: dict[dt.timedelta, Counter[int]] = {}
    for window, contact_ids in windows.items():
        rows = (
            Recipient.objects.filter(contact_id__in=contact_ids, state__in=CAP_STATES, created_at__gt=now - window)
            .values_list("contact_id")
            .annotate(count=Count("id"))
        )
        counts[window] = Counter(dict(rows))
    return counts


def _run_answers_insert(campaign: Campaign, run: CampaignRun, answers: list[tuple[Recipient, ClaimedEvent]]) -> None:
    """Insert a run's new recipients, their pending messages (one INSERT each) and its counters (one UPDATE)."""
    recipients = Recipient.objects.bulk_create([recipient for recipient, _ in answers])  # ids set on each
    sending = [(recipient, event) for recipient, event in answers if recipient.state in (R.PENDING, R.HELD)]
    if sending:
        message_ids = arms.answers_messages_create(campaign, sending, ContentType.objects.get_for_model(Recipient))
        with connection.cursor() as cursor:
            cursor.execute(
                """UPDATE campaigns_recipient r SET message_id = m.message_id
                   FROM unnest(%s::bigint[], %s::bigint[]) AS m (recipient_id, message_id)
                   WHERE r.id = m.recipient_id""",
                [list(message_ids), list(message_ids.values())],
            )
    _counters_add(run.pk, Counter((recipient.state, recipient.reason) for recipient in recipients))
    arms.answers_sizes_add(run.pk, recipients)
    if run.status == RunStatus.RUNNING and any(recipient.state == R.PENDING for recipient in recipients):
        dispatch.dispatch_start(run.pk, chains=1)  # after commit


def recipient_decide(
    campaign: Campaign, event: ClaimedEvent, contact: Contact, now: dt.datetime, *, capped: bool
) -> tuple[str, str, str, dt.datetime | None]:
    """(state, reason, detail, release_at): the snapshot's decisions for one contact and event."""
    if contact.consent_status != ConsentStatus.OPTED_IN:
        return R.SKIPPED, SkipReason.OPTED_OUT, "", None
    if capped:
        return R.SKIPPED, SkipReason.CAPPED, "", None
    rendered = template_render(campaign.template, contact=contact, context=event.properties)
    if not rendered.ok:
        return R.SKIPPED, SkipReason.MISSING_VARIABLE, rendered.skip_reason[:255], None
    free_form = not campaign.template.content_sid
    if campaign.sender.channel == "whatsapp" and free_form and not send_service.in_whatsapp_window(contact, now):
        return R.SKIPPED, SkipReason.OUTSIDE_WINDOW, "", None
    release_at = None
    if campaign.quiet_start is not None and campaign.quiet_end is not None:
        zone = contact.timezone or settings.DEFAULT_TIMEZONE
        release_at = quiet_release_at(now, zone, campaign.quiet_start, campaign.quiet_end)
    if campaign.validity:
        expires_at = min(event.occurred_at, now) + campaign.validity
        if (release_at or now) >= expires_at:
            return R.SKIPPED, SkipReason.EXPIRED, "", None
    return (R.HELD, "", "", release_at) if release_at else (R.PENDING, "", "", None)


def _counters_add(run_id: int, counts: Counter[tuple[str, str]]) -> None:
    """More recipients by (state, reason): total, each state's counter and the skip reasons in one UPDATE."""
    states: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for (state, reason), count in counts.items():
        assert state in ("pending", "held", "sending", "sent", "skipped", "failed")
        states[state] += count
        if state == R.SKIPPED:
            reasons[reason] += count
    if not states:
        return
    sets, params = ["total = total + %s"], [sum(states.values())]
    for state, count in sorted(states.items()):
        sets.append(f"{state} = {state} + %s")
        params.append(count)
    if reasons:
        sets.append(
            "skipped_by_reason = COALESCE(skipped_by_reason, '{}'::jsonb) || ("
            " SELECT jsonb_object_agg(r.reason, COALESCE((skipped_by_reason ->> r.reason)::int, 0) + r.n)"
            " FROM unnest(%s::text[], %s::int[]) AS r (reason, n))"
        )
        params += [list(reasons), list(reasons.values())]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE campaigns_campaignrun SET {', '.join(sets)} WHERE id = %s", [*params, run_id])
