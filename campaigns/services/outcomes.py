"""Campaign recipients whose message's outcome is unknown: settled at a cancel, resolved by staff.

A recipient follows its message (``upkeep.recipients_follow``): ``unknown`` while the provider
cannot be asked, then sent, failed, or pending again. Staff act on a campaign's (or one run's)
unknown outcomes through ``campaign_unknown_resolve``, the one service behind the admin, the
API and messaging's per-message door (the resolver registered for recipients' messages):

- ``lookup``: ask the provider now, and move the recipients with what it says;
- ``resend``: a new, deliberate attempt. The messages go back to pending, their recipients too;
  a completed run is reopened, and its campaign runs again (lifecycle ``run_reopen``, audited as
  "resend"). A cancelled run's messages are never resent;
- ``fail``: the messages and their recipients are failed.

Every action is audited twice: one ``CampaignAction`` on the campaign (for a resend, one per run)
and one ``MessageResolution`` per message.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from audience.services import actor_name
from campaigns.models import Campaign, CampaignAction, CampaignRun, Recipient, RecipientState
from campaigns.services import upkeep
from messaging.models import Message, MessageStatus, ResolutionAction
from messaging.services import outcomes as send_outcomes

CANCELLED_UNKNOWN = "the run was cancelled before the provider's answer came; it is looked up at the provider"
LOOKUPS_PER_REQUEST = 100  # each may wait for the provider's timeouts; the beat looks up the rest every minute
AUDITED_IDS = 1000  # message ids kept in one audit row's detail (the count is always there)


class UnknownOutcomeError(send_outcomes.ResolutionRefused):
    """A resolution of a campaign's unknown outcomes was refused; message_dict names the field."""


def run_sends_unknown(run: CampaignRun) -> int:
    """At a cancel: the run's sends no live request can answer any more become unknown, with their recipients.

    Sends claimed longer ago than ``in_flight_for`` (the batch's window plus the provider's
    timeouts) are left by their dispatcher, alive or not; fresher ones it still settles. Claims
    whose message already tells their outcome are settled at once. Returns recipients moved.
    """
    cutoff = timezone.now() - send_outcomes.in_flight_for()
    claims = Recipient.objects.filter(run=run, state=RecipientState.SENDING)
    stale = claims.filter(
        message__status=MessageStatus.SENDING, message__provider_sid__isnull=True, message__claimed_at__lt=cutoff
    )
    stale_ids = stale.values_list("message_id", flat=True)
    send_outcomes.messages_mark_unknown(stale_ids, claimed_before=cutoff, why=CANCELLED_UNKNOWN)
    return upkeep.recipients_follow(run.pk, claims.select_related("message").order_by("pk"))


def campaign_unknown_resolve(
    campaign: Campaign,
    action: str,
    *,
    actor=None,
    run: CampaignRun | None = None,
    message_ids: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Look up, resend or fail the campaign's (or ``run``'s) unknown outcomes, or only ``message_ids`` among them.

    Returns what was done: the action, how many messages, their statuses after (by message and
    counted), and for a lookup how many unknown outcomes were left for another request.
    """
    action = send_outcomes.action_checked(action)
    ids, remaining = _unknown_ids(campaign, action, run, message_ids)
    if action == ResolutionAction.LOOKUP:  # the provider is called: no transaction held meanwhile
        statuses = _resolve(ids, action, actor)
    else:
        with transaction.atomic():
            if action == ResolutionAction.RESEND:
                _runs_reopen(campaign, ids, actor)
            statuses = _resolve(ids, action, actor)
    counted = Counter(statuses.values())
    if action != ResolutionAction.RESEND:  # a resend is audited by each run's reopening
        CampaignAction.objects.create(
            campaign=campaign,
            action="mark_failed" if action == ResolutionAction.FAIL else str(action),
            from_status=campaign.status,
            to_status=campaign.status,
            actor=actor_name(actor) or "system",
            detail={**_audited(ids), "run": run.pk if run else None, "status_after": dict(counted)},
        )
    return {
        "action": str(action),
        "run": run.pk if run else None,
        "messages": len(ids),
        "by_status": dict(counted),
        "statuses": statuses,
        "remaining": remaining,
    }


def _unknown_ids(
    campaign: Campaign, action: str, run: CampaignRun | None, message_ids: Iterable[int] | None
) -> tuple[list[int], int]:
    if run is not None and run.campaign_id != campaign.pk:
        raise UnknownOutcomeError({"run": [f"run {run.pk} is not a run of campaign {campaign.pk}"]})
    scope = Message.objects.filter(status=MessageStatus.UNKNOWN, recipient__run__campaign=campaign)
    if run is not None:
        scope = scope.filter(recipient__run=run)
    where = f"run {run.pk}" if run else f"campaign {campaign.pk}"
    if message_ids is not None:
        ids = send_outcomes.messages_unknown_checked(message_ids)
        if outside := sorted(set(ids) - set(scope.filter(pk__in=ids).values_list("pk", flat=True))):
            named = ", ".join(map(str, outside[:20]))
            raise UnknownOutcomeError({"messages": [f"not messages of {where}: {named}"]})
    else:
        ids = list(scope.order_by("sending_at", "pk").values_list("pk", flat=True))
        if not ids:
            raise UnknownOutcomeError({"messages": [f"no outcome is unknown in {where}"]})
    if action == ResolutionAction.LOOKUP and len(ids) > LOOKUPS_PER_REQUEST:
        return ids[:LOOKUPS_PER_REQUEST], len(ids) - LOOKUPS_PER_REQUEST
    return ids, 0


def _resolve(ids: list[int], action: str, actor) -> dict[int, str]:
    """The messages move, their recipients with them (a message never created, of an ended run, fails
    then); the audit rows say where each message ended."""
    send_outcomes.messages_resolve(ids, action, actor=actor, audit=False)
    _recipients_follow(ids)
    statuses = dict(Message.objects.filter(pk__in=ids).values_list("pk", "status"))
    send_outcomes.resolutions_record(statuses, action, actor=actor)
    return statuses


def _runs_reopen(campaign: Campaign, ids: list[int], actor) -> None:
    """A resend's runs run again (refused, before anything moves, for a cancelled one); audited per run."""
    from campaigns.services.lifecycle import run_reopen

    by_run: dict[int, list[int]] = defaultdict(list)
    for run_id, message_id in Recipient.objects.filter(message_id__in=ids).values_list("run_id", "message_id"):
        by_run[run_id].append(message_id)
    for run in CampaignRun.objects.filter(pk__in=by_run).order_by("pk"):
        run_reopen(run, actor=actor, detail=_audited(sorted(by_run[run.pk])))


def _recipients_follow(message_ids: list[int]) -> int:
    """The messages' recipients move with them now, rather than at the reaper's next pass."""
    by_run: dict[int, list[Recipient]] = defaultdict(list)
    for recipient in Recipient.objects.filter(message_id__in=message_ids).select_related("message").order_by("pk"):
        by_run[recipient.run_id].append(recipient)
    return sum(upkeep.recipients_follow(run_id, group, patient=False) for run_id, group in by_run.items())


def _audited(ids: list[int]) -> dict[str, Any]:
    return {"messages": ids[:AUDITED_IDS], "count": len(ids)}


def recipient_messages_resolve(message_ids: list[int], action: str, *, actor) -> dict[int, str]:
    """The resolver messaging calls for recipients' messages (a message page, the messages API)."""
    by_campaign: dict[int, list[int]] = defaultdict(list)
    for message_id, campaign_id in Recipient.objects.filter(message_id__in=message_ids).values_list(
        "message_id", "run__campaign_id"
    ):
        by_campaign[campaign_id].append(message_id)
    statuses: dict[int, str] = {}
    for campaign in Campaign.objects.filter(pk__in=by_campaign).order_by("pk"):
        result = campaign_unknown_resolve(campaign, action, actor=actor, message_ids=by_campaign[campaign.pk])
        statuses.update(result["statuses"])
    if orphans := sorted(set(message_ids) - set(statuses)):  # their recipient was deleted with its contact
        statuses.update(send_outcomes.messages_resolve(orphans, action, actor=actor))
    return statuses
