"""The campaign admin: the form and lists, the live page, and the actions behind a confirmation."""

from __future__ import annotations

from datetime import datetime

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Sum
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html

from audience.choices import ConsentStatus
from audience.models import Contact
from campaigns import selectors, services
from campaigns.admin.confirm import ACTIONS, CONFIRMED_VERBS, FINISHED, cancel_facts, duration_words, launch_facts
from campaigns.admin.experiments import (
    EXPERIMENT_FIELDSET,
    VariantInline,
    experiment_state,
    winner_view,
)
from campaigns.admin.forms import CampaignForm, TestSendForm
from campaigns.admin.inlines import CampaignActionInline, CampaignRunInline
from campaigns.admin.outcomes import unknown_outcomes_view
from campaigns.admin.progress import run_progress, run_progress_bar
from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignRun,
    CampaignStatus,
)
from campaigns.segments.rules import RuleError
from campaigns.services.cost import cost_words
from campaigns.services.launch_checks import campaign_variable_warning
from campaigns.services.lifecycle import TRANSITIONS, skip_reason_label
from config import privacy


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    # What fits a 1,440 px window: the run's bar and the links; template, sender and segment are filters.
    list_display = ("name", "kind", "status", "current_progress", "outcomes_unknown", "updated_at", "analytics_link")
    list_filter = ("status", "kind", "schedule_type", "sender", "template", "segment")
    search_fields = ("name",)
    list_select_related = ("template", "sender", "segment")
    readonly_fields = (
        "status",
        "audience_count",
        "current_progress",
        "next_run",
        "periodic_task_link",
        "analytics_link",
        "experiment_state",
        "created_by",
        "created_at",
        "updated_at",
    )
    inlines = [VariantInline, CampaignRunInline, CampaignActionInline]
    change_form_template = "admin/campaigns/campaign/change_form.html"

    class Media:
        js = ("campaigns/run_progress.js",)
        css = {"all": ("campaigns/run_progress.css", "campaigns/segment_preview.css")}

    fieldsets = (
        ("Now", {"fields": ("status", "current_progress", "next_run", "analytics_link")}),
        (None, {"fields": ("name", "kind", "template", "sender")}),
        ("Audience", {"fields": ("segment", "topic", "audience_count")}),
        ("Delivery", {"fields": ("mps", "quiet_start", "quiet_end", "frequency_cap", "frequency_window", "validity")}),
        ("Schedule", {"fields": ("schedule_type", "send_at", "cron", "cron_timezone", "periodic_task_link")}),
        (
            "Trigger (triggered campaigns)",
            {
                "fields": ("trigger_event", "trigger_keyword", "trigger_conditions", "trigger_contact_rule"),
                "description": "A triggered campaign answers each matching event (POST /api/v1/events/) or inbound "
                "keyword with its template, once launched; its segment and topic still apply.",
            },
        ),
        (
            "Outcomes",
            {
                "fields": ("link_params", "goal_event", "goal_conditions", "goal_window", "goal_model"),
                "description": "Parameters added to the tracked links (UTM...), and the goal event its conversions "
                "meet within the window after a message or a click (docs/outcomes.md).",
            },
        ),
        EXPERIMENT_FIELDSET,
        ("History", {"fields": ("created_by", "created_at", "updated_at")}),
    )
    TRIGGER_FIELDSET = "Trigger (triggered campaigns)"

    def get_fieldsets(self, request, obj=None):
        """The page starts with where the campaign is; a new campaign has no "Now" yet, and only a
        triggered one shows its trigger fields (a new one shows them folded, for choosing that kind)."""
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None:
            fieldsets = [item for item in fieldsets if item[0] != "Now"]
            return [
                (name, {**options, "classes": ("collapse",)}) if name == self.TRIGGER_FIELDSET else (name, options)
                for name, options in fieldsets
            ]
        if obj.kind != CampaignKind.TRIGGERED:
            fieldsets = [item for item in fieldsets if item[0] != self.TRIGGER_FIELDSET]
        return fieldsets

    @admin.display(description="next run")
    def next_run(self, obj: Campaign) -> str:
        task = obj.periodic_task
        if task is None or not task.enabled:
            return "—"
        if task.clocked_id:
            return formats.date_format(timezone.localtime(task.clocked.clocked_time), "DATETIME_FORMAT")
        if task.crontab_id:
            return f"on its schedule ({obj.cron}, {obj.cron_timezone})"
        return "—"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(unknown_total=Sum("runs__unknown"))

    @admin.display(description="outcomes unknown", ordering="unknown_total")
    def outcomes_unknown(self, obj: Campaign) -> str:
        total = getattr(obj, "unknown_total", None) or 0
        if not total:
            return "—"
        url = reverse("admin:campaigns_campaign_unknown_outcomes", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, total)

    def has_change_permission(self, request, obj=None) -> bool:
        """A finished campaign is a record: shown read-only (duplicate it to send again)."""
        if obj is not None and obj.status in FINISHED:
            return False
        return super().has_change_permission(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        campaign = self.get_object(request, object_id)
        verbs = []
        if campaign is not None:
            allowed = TRANSITIONS[campaign.status]
            labels = {
                "schedule": "Schedule",
                "launch": "Launch now",
                "pause": "Pause",
                "resume": "Resume",
                "cancel": "Cancel campaign",
                "duplicate": "Duplicate",
            }
            wanted = {
                "schedule": CampaignStatus.SCHEDULED in allowed and campaign.status == CampaignStatus.DRAFT,
                "launch": CampaignStatus.RUNNING in allowed
                and campaign.status in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED),
                "pause": CampaignStatus.PAUSED in allowed,
                "resume": campaign.status == CampaignStatus.PAUSED,
                "cancel": CampaignStatus.CANCELLED in allowed,
                "duplicate": self.has_add_permission(request),
            }
            if not self.has_change_permission(request, campaign):  # a finished campaign, or an analyst
                wanted = {verb: show and verb == "duplicate" for verb, show in wanted.items()}
            verbs = [(verb, labels[verb]) for verb, show in wanted.items() if show]
        unknown = getattr(campaign, "unknown_total", None) or 0
        extra_context = {
            **(extra_context or {}),
            "campaign_verbs": verbs,
            "confirmed_verbs": CONFIRMED_VERBS,
            "unknown_total": unknown,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        from django.urls import path

        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<int:pk>/act/<str:verb>/", self.admin_site.admin_view(self.act_view), name=f"{prefix}_act"),
            path("<int:pk>/dry-run/", self.admin_site.admin_view(self.dry_run_view), name=f"{prefix}_dry_run"),
            path("<int:pk>/test-send/", self.admin_site.admin_view(self.test_send_view), name=f"{prefix}_test_send"),
            path("progress/", self.admin_site.admin_view(self.progress_view), name=f"{prefix}_progress"),
            path(
                "<int:pk>/winner/",
                self.admin_site.admin_view(lambda request, pk: winner_view(self, request, pk)),
                name=f"{prefix}_winner",
            ),
            path(
                "<int:pk>/unknown-outcomes/",
                self.admin_site.admin_view(lambda request, pk: unknown_outcomes_view(self, request, pk)),
                name=f"{prefix}_unknown_outcomes",
            ),
            *super().get_urls(),
        ]

    def progress_view(self, request):
        """JSON counters of the runs named by ?run=1&run=2 (at most 100), for run_progress.js."""
        from django.http import HttpResponseForbidden, JsonResponse

        if not self.has_view_permission(request):
            return HttpResponseForbidden()
        ids = [int(value) for value in request.GET.getlist("run") if value.isdigit()][:100]
        runs = CampaignRun.objects.filter(pk__in=ids).order_by("pk")
        return JsonResponse({"runs": [run_progress(run) for run in runs]})

    @admin.display(description="current run")
    def current_progress(self, obj: Campaign) -> str:
        return run_progress_bar(obj.runs.first()) if obj.pk else "—"

    @admin.display(description="experiment")
    def experiment_state(self, obj: Campaign) -> str:
        return experiment_state(obj)

    @admin.display(description="analytics")
    def analytics_link(self, obj: Campaign) -> str:
        if not obj.pk:
            return "—"
        return format_html('<a href="{}">Analytics</a>', reverse("reporting:campaign", args=[obj.pk]))

    @admin.display(description="audience now")
    def audience_count(self, obj: Campaign) -> str:
        if not obj.pk:
            return "Save to see the audience."
        if obj.segment_id is None:
            opted_in = Contact.objects.filter(consent_status=ConsentStatus.OPTED_IN).count()
            return f"{opted_in} opted-in contacts (no segment)"
        try:
            counts = selectors.segment_counts(obj.segment)
        except RuleError as exc:
            return f"segment is invalid: {exc}"
        return f"{counts['count']} contacts match {obj.segment.name!r}, {counts['opted_in']} opted in"

    @admin.display(description="periodic task")
    def periodic_task_link(self, obj: Campaign) -> str:
        if not obj.periodic_task_id:
            return "—"
        url = reverse("admin:django_celery_beat_periodictask_change", args=[obj.periodic_task_id])
        return format_html('<a href="{}">{}</a>', url, obj.periodic_task.name)

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
        if change:
            services.campaign_update(obj, actor=request.user, **fields)
        else:
            created = services.campaign_create(actor=request.user, **form.cleaned_data)
            obj.pk = created.pk
        if not change or {"template", "segment", "topic"} & set(form.changed_data):
            self._warn_if_variables_missing(request, Campaign.objects.get(pk=obj.pk))

    def _warn_if_variables_missing(self, request, campaign: Campaign) -> None:
        """Most of the audience lacking a template variable would be skipped at launch: say so at save."""
        warning = campaign_variable_warning(campaign)
        if warning:
            self.message_user(request, warning, messages.WARNING)

    def delete_model(self, request, obj):
        services.campaign_delete(obj)

    def act_view(self, request, pk: int, verb: str):
        from django.http import HttpResponseNotAllowed
        from django.shortcuts import get_object_or_404

        if request.method == "GET" and verb in CONFIRMED_VERBS:
            return self._confirm_page(request, get_object_or_404(Campaign, pk=pk), verb)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = get_object_or_404(Campaign, pk=pk)
        may = self.has_add_permission(request) if verb == "duplicate" else self.has_change_permission(request, campaign)
        if verb not in ACTIONS or not may:
            self.message_user(request, "That action is not allowed.", messages.ERROR)
        else:
            try:
                done = ACTIONS[verb](campaign, actor=request.user)
            except ValidationError as exc:
                self.message_user(request, f"Could not {verb}: {'; '.join(exc.messages)}", messages.ERROR)
            else:
                if verb == "duplicate":
                    self.message_user(request, f"Duplicated as {done.name!r}, a draft: edit it, then launch it.")
                    return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[done.pk]))
                campaign.refresh_from_db()
                self.message_user(request, f"{verb.capitalize()}: the campaign is now {campaign.get_status_display()}.")
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))

    def _confirm_page(self, request, campaign: Campaign, verb: str):
        """What Launch now or Cancel will do, stated before it is done (both are irreversible)."""
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": campaign,
            "verb": verb,
            "verb_label": CONFIRMED_VERBS[verb],
            "can_confirm": True,
        }
        if verb == "launch":
            context.update(title=f"Launch {campaign.name} now?", confirm_label="Yes, launch now")
            try:
                context["facts"] = launch_facts(services.campaign_dry_run(campaign))
            except ValidationError as exc:
                context.update(error="; ".join(exc.messages), can_confirm=False)
            context["warning"] = "Messages start leaving at once; a launch cannot be undone, only paused or cancelled."
        else:
            context.update(title=f"Cancel {campaign.name}?", confirm_label="Yes, cancel the campaign")
            context["facts"] = cancel_facts(campaign)
            context["warning"] = (
                "Messages already sent stay sent; everyone still waiting is skipped. A cancelled campaign cannot "
                "be resumed: duplicate it to send again."
            )
        return TemplateResponse(request, "admin/campaigns/campaign/confirm.html", context)

    def test_send_view(self, request, pk: int):
        """Send what a contact would get to a number staff give (theirs), counted nowhere."""
        from django.shortcuts import get_object_or_404

        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        form = TestSendForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                sent = services.campaign_test_send(
                    campaign, contact=form.cleaned_data["contact"], to=form.cleaned_data["to"], actor=request.user
                )
            except ValidationError as exc:
                for name, errors in exc.message_dict.items():
                    form.add_error(name if name in form.fields else None, errors)
            else:
                self.message_user(request, f"Test sent to {sent.to}: {sent.text}")
                return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": campaign,
            "title": f"Send a test of {campaign.name}",
            "form": form,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/test_send.html", context)

    def dry_run_view(self, request, pk: int):
        from django.shortcuts import get_object_or_404

        campaign = get_object_or_404(Campaign, pk=pk)
        # What the API's dry run asks too: a dry run runs the launch's whole snapshot query.
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": campaign,
            "title": f"Dry run of {campaign.name}",
        }
        try:
            context["result"] = result = services.campaign_dry_run(campaign)
            for sample in result["samples"]:
                sample["phone"] = privacy.shown("phone", sample["phone"], privacy.request_sees_full(request))
            context["excluded"] = [(skip_reason_label(reason), n) for reason, n in result["excluded"].items()]
            context["at"] = datetime.fromisoformat(result["at"])
            context["held_until"] = datetime.fromisoformat(result["held_until"]) if result["held_until"] else None
            context["duration"] = duration_words(result["estimated_seconds"])
            context["cost"] = cost_words(result["cost"])
        except ValidationError as exc:
            context["error"] = "; ".join(exc.messages)
        return TemplateResponse(request, "admin/campaigns/campaign/dry_run.html", context)
