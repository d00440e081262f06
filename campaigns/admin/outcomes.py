"""The campaign admin's part for outcomes unknown: what a run shows, and the page where staff resolve them.

The page lists the campaign's runs with unknown outcomes (how many, when they give up) and a
sample of the messages, and offers the three actions for one run or the whole campaign. It calls
``campaigns.services.outcomes.campaign_unknown_resolve``, as the API does.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from campaigns import selectors
from campaigns.models import Campaign, CampaignRun
from campaigns.services import outcomes
from messaging.models import Message, MessageStatus, ResolutionAction
from messaging.selectors import gives_up_text, unknown_gives_up_at

SAMPLE = 50


def run_unknown_summary(run: CampaignRun) -> str:
    """'2 outcomes unknown, the last gives up at … (in 52 min)', linked to the page where staff resolve them."""
    if not run.pk or not run.unknown:
        return "—"
    info = selectors.runs_unknown_outcomes([run.pk]).get(run.pk)
    url = reverse("admin:campaigns_campaign_unknown_outcomes", args=[run.campaign_id]) + f"?run={run.pk}"
    when = f", the last gives up at {gives_up_text(info['last_gives_up_at'])}" if info else ""
    return format_html('<a href="{}">{} outcome{} unknown</a>{}', url, run.unknown, "s"[: run.unknown != 1], when)


def unknown_outcomes_view(model_admin, request, pk: int):
    """GET: the campaign's unknown outcomes by run. POST (Staff): look up, resend or fail them."""
    campaign = get_object_or_404(Campaign, pk=pk)
    if not model_admin.has_view_permission(request, campaign):
        raise PermissionDenied
    url = reverse("admin:campaigns_campaign_unknown_outcomes", args=[pk])
    if request.method == "POST":
        if not model_admin.has_change_permission(request):
            raise PermissionDenied
        _act(model_admin, request, campaign)
        return HttpResponseRedirect(url)
    runs = list(campaign.runs.filter(unknown__gt=0).order_by("-started_at"))
    info = selectors.runs_unknown_outcomes([run.pk for run in runs])
    rows = [{"run": run, "gives_up": gives_up_text(info.get(run.pk, {}).get("last_gives_up_at"))} for run in runs]
    sample = Message.objects.filter(status=MessageStatus.UNKNOWN, recipient__run__campaign=campaign)
    if (run_id := request.GET.get("run", "")).isdigit():
        sample = sample.filter(recipient__run_id=int(run_id))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "original": campaign,
        "title": f"Outcomes unknown: {campaign.name}",
        "rows": rows,
        "total": sum(run.unknown for run in runs),
        "actions": ResolutionAction.choices,
        "can_act": model_admin.has_change_permission(request),
        "messages_sample": [
            (message, gives_up_text(unknown_gives_up_at(message)))
            for message in sample.order_by("sending_at", "pk")[:SAMPLE]
        ],
        "sample_size": SAMPLE,
    }
    return TemplateResponse(request, "admin/campaigns/campaign/unknown_outcomes.html", context)


def _act(model_admin, request, campaign: Campaign) -> None:
    action = request.POST.get("action", "")
    run = None
    if run_id := request.POST.get("run", ""):
        run = campaign.runs.filter(pk=int(run_id)).first() if run_id.isdigit() else None
        if run is None:
            model_admin.message_user(request, f"Campaign {campaign.pk} has no run {run_id!r}.", messages.ERROR)
            return
    try:
        result = outcomes.campaign_unknown_resolve(campaign, action, actor=request.user, run=run)
    except ValidationError as exc:
        model_admin.message_user(request, f"Not done: {'; '.join(exc.messages)}", messages.ERROR)
        return
    after = ", ".join(f"{n} {status}" for status, n in sorted(result["by_status"].items()))
    done = f"{ResolutionAction(action).label}: {result['messages']} message{'s'[: result['messages'] != 1]} ({after})."
    if result["remaining"]:
        done += f" {result['remaining']} more are left for another lookup."
    model_admin.message_user(request, done)
