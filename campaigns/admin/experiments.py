"""The campaign admin's part for experiments: the variants inline, and the page where staff pick a test's winner.

The inline takes 2-5 variants with weights and refuses a bad set with the same words as the
launch (campaigns.services.arms). Variants are fixed once the campaign has launched: its
recipients carry their ids. The winner page shows each arm's figures (read through the function
reporting registers) and asks for a confirmation before ``winner.winner_pick`` releases the rest
of the audience with the chosen variant, as beat does for an automatic pick.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from campaigns.models import Campaign, CampaignStatus, Variant, WinnerPick, WinnerUndecided
from campaigns.selectors import winner_action
from campaigns.services import arms, winner


class ExperimentFormMixin:
    """The campaign form's experiment fields: left out, they keep their defaults (no experiment)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ("control_share", "winner_pick", "winner_undecided"):
            if name in self.fields:
                self.fields[name].required = False

    def clean_control_share(self) -> int:
        return self.cleaned_data.get("control_share") or 0

    def clean_winner_pick(self) -> str:
        return self.cleaned_data.get("winner_pick") or WinnerPick.AUTO

    def clean_winner_undecided(self) -> str:
        return self.cleaned_data.get("winner_undecided") or WinnerUndecided.LEADER


class VariantFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        kept = [
            (form.cleaned_data.get("label", ""), form.cleaned_data.get("template"), form.cleaned_data.get("weight"))
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        errors = arms.experiment_errors(self.instance, kept)
        problems = [*errors.pop("variants", []), *(text for texts in errors.values() for text in texts)]
        if problems:
            raise ValidationError(problems)


class VariantInline(admin.TabularInline):
    model = Variant
    formset = VariantFormSet
    fields = ("label", "template", "weight")
    extra = 0
    max_num = arms.MAX_VARIANTS
    verbose_name = "variant (experiment arm)"
    verbose_name_plural = "Variants: 2-5 message variants drawn by weight (none: the campaign's template alone)"

    def _editable(self, obj) -> bool:
        return obj is None or not arms.variants_frozen(obj)

    def has_add_permission(self, request, obj=None) -> bool:
        return self._editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._editable(obj) and super().has_delete_permission(request, obj)


EXPERIMENT_FIELDSET = (
    "Experiment",
    {
        "fields": (
            "control_share",
            "winner_test_share",
            "winner_wait",
            "winner_metric",
            "winner_pick",
            "winner_undecided",
            "winner_max_wait",
            "experiment_state",
        ),
        "description": "Variants are listed below. A control group is measured for the goal but sent nothing. "
        "Test then send the winner: the test share gets the variants first; after the wait the leader on the "
        "metric (or the variant staff pick) goes to the rest. A lead that is not significant (95 %) is sent "
        "anyway, waited on up to the longest wait, or replaced by the first variant, as chosen here.",
    },
)


def experiment_state(campaign: Campaign) -> str:
    """Where the experiment stands, with the link to pick a winner while a test waits for one."""
    if not campaign.pk or campaign.winner_test_share is None:
        return "—"
    if campaign.winner_variant_id:
        when = campaign.winner_picked_at.strftime("%Y-%m-%d %H:%M") if campaign.winner_picked_at else ""
        return f"Winner: {campaign.winner_variant.label} (picked {when} UTC). {winner_sentence(campaign)}".strip()
    if campaign.status not in (CampaignStatus.RUNNING, CampaignStatus.PAUSED):
        return "The test starts at launch."
    url = reverse("admin:campaigns_campaign_winner", args=[campaign.pk])
    return format_html('Testing. <a href="{}">See the arms and pick the winner</a>', url)


def winner_sentence(campaign: Campaign) -> str:
    """How the winner was picked and whether its lead was significant, from the pick's audit."""
    action = winner_action(campaign) if campaign.winner_variant_id else None
    return (action.detail or {}).get("why", "") if action else ""


def winner_view(model_admin, request, pk: int):
    """GET: the arms' figures and a choice of variant. POST (Staff, confirmed): pick it."""
    campaign = get_object_or_404(Campaign, pk=pk)
    if not model_admin.has_view_permission(request, campaign):
        raise PermissionDenied
    url = reverse("admin:campaigns_campaign_change", args=[pk])
    variants = list(campaign.variants.order_by("id"))
    if request.method == "POST":
        if not model_admin.has_change_permission(request, campaign):
            raise PermissionDenied
        chosen = request.POST.get("variant", "")
        if not chosen.isdigit() or int(chosen) not in {v.pk for v in variants} or not request.POST.get("confirm"):
            model_admin.message_user(request, "Choose one of the variants and confirm.", messages.ERROR)
            return HttpResponseRedirect(request.path)
        try:
            picked = winner.winner_pick(campaign.pk, int(chosen), actor=request.user, how="manual")
        except winner.WinnerError as exc:
            model_admin.message_user(request, f"Not done: {exc}", messages.ERROR)
            return HttpResponseRedirect(request.path)
        if picked:
            model_admin.message_user(request, "The winner is picked: the rest of the audience is being sent it.")
        else:
            model_admin.message_user(request, "A winner was already picked; nothing changed.", messages.WARNING)
        return HttpResponseRedirect(url)
    figures = winner.arm_figures_provider(campaign) if winner.arm_figures_provider else {"arms": []}
    lead = winner.winner_leader(campaign, figures) if figures["arms"] else winner.Lead(None)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "original": campaign,
        "title": f"Pick the winner: {campaign.name}",
        "arms": [row for row in figures["arms"] if not row["rollout"]],
        "metric": campaign.get_winner_metric_display() or "reply rate",
        "variants": variants,
        "leader": lead.variant,
        "why": lead.sentence,
        "picked": winner_sentence(campaign),
        "can_pick": model_admin.has_change_permission(request, campaign) and not campaign.winner_variant_id,
    }
    return TemplateResponse(request, "admin/campaigns/campaign/winner_pick.html", context)
