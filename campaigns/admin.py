from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Sum
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from campaigns import selectors, services
from campaigns.admin_outcomes import run_unknown_summary, unknown_outcomes_view
from campaigns.models import Campaign, CampaignAction, CampaignRun, Event, Recipient, Segment
from campaigns.models import CampaignStatus as S
from campaigns.segments import rules
from campaigns.segments.query import to_query
from campaigns.segments.rules import RuleError
from campaigns.services import SegmentError
from campaigns.services.lifecycle import TRANSITIONS
from config import privacy
from config.json_limits import DepthLimitedJSONDecoder
from config.privacy_admin import PersonalFieldsMixin, viewer_sees_full

SAMPLE_SIZE = 10


class SegmentForm(forms.ModelForm):
    query = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 100, "spellcheck": "false", "class": "segment-code"}),
        help_text=(
            'For example: age >= 18 AND city = "Nairobi" AND NOT topic = "vip"; '
            'signup_date after "30 days ago"; city in ("Nairobi", "Lagos"); email exists; '
            "age between 18 and 30. AND binds tighter than OR; use parentheses."
        ),
    )
    definition = forms.JSONField(
        required=False,
        decoder=DepthLimitedJSONDecoder,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 100, "spellcheck": "false", "class": "segment-code"}),
        help_text="Or the JSON rule tree (all / any / not / field-op-value); it is used when you edit it here.",
    )

    class Meta:
        model = Segment
        fields = ["name", "description", "query", "definition"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        if instance.pk and not instance.query and instance.definition:
            self.initial["query"] = _query_text(instance.definition)
        self.rule_input: dict[str, Any] = {}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        query = (data.get("query") or "").strip()
        edited_json = "definition" in self.changed_data and "query" not in self.changed_data
        self.rule_input = {"definition": data.get("definition")} if edited_json or not query else {"query": query}
        try:
            clean = services.segment_definition_clean(**self.rule_input)
        except SegmentError as exc:
            field = exc.detail["field"] if exc.detail["field"] in self.fields else None
            self.add_error(field, ValidationError(_error_html(exc)))
            return data
        data["definition"] = clean.definition
        return data


def _query_text(definition: Any) -> str:
    """The query string for a stored tree; a tree that no longer validates is shown as its error."""
    try:
        return to_query(rules.to_json(rules.validate(definition)))
    except RuleError as exc:
        return f"(invalid: {exc})"


def _error_html(exc: SegmentError) -> str:
    detail = exc.detail
    if "excerpt" in detail:
        return format_html('{}<pre class="segment-error">{}</pre>', detail["message"].split("\n")[0], detail["excerpt"])
    return detail["message"]


def _sample_table(contacts) -> str:
    full = viewer_sees_full()
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
        (
            (
                privacy.shown("phone", c.phone, full),
                privacy.shown("name", c.name, full),
                c.consent_status,
                json.dumps(c.attributes, ensure_ascii=False)[:120],
            )
            for c in contacts
        ),
    )
    head = "<tr><th>phone</th><th>name</th><th>consent</th><th>attributes</th></tr>"
    return format_html('<table class="segment-sample"><thead>{}</thead><tbody>{}</tbody></table>', head, rows)


@admin.register(Segment)
class SegmentAdmin(PersonalFieldsMixin, admin.ModelAdmin):  # its sample of contacts is masked
    form = SegmentForm
    list_display = ("name", "rule_text", "created_by", "updated_at")
    search_fields = ("name", "description", "query")
    readonly_fields = ("audience", "created_by", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description")}),
        ("Rule", {"fields": ("query", "definition")}),
        ("Audience", {"fields": ("audience",)}),
        ("History", {"fields": ("created_by", "created_at", "updated_at")}),
    )

    class Media:
        js = ("campaigns/segment_preview.js",)
        css = {"all": ("campaigns/segment_preview.css",)}

    def get_queryset(self, request):
        return selectors.segment_list()

    @admin.display(description="rule")
    def rule_text(self, obj: Segment) -> str:
        text = obj.query or _query_text(obj.definition)
        return text if len(text) <= 100 else text[:97] + "..."

    @admin.display(description="matching contacts")
    def audience(self, obj: Segment | None) -> str:
        url = reverse("segment-preview")
        if obj is None or obj.pk is None:
            body = format_html("<p>{}</p>", "Type a query to see how many contacts match.")
        else:
            body = self._audience_body(obj)
        return format_html('<div id="segment-preview" data-url="{}" aria-live="polite">{}</div>', url, body)

    def _audience_body(self, obj: Segment) -> str:
        try:
            preview = selectors.segment_preview(obj, size=SAMPLE_SIZE)
        except RuleError as exc:
            return format_html('<p class="errornote">{}</p>', str(exc))
        summary = format_html(
            '<p class="segment-count"><strong>{}</strong> contacts match, {} of them opted in.</p>',
            preview["count"],
            preview["opted_in"],
        )
        return format_html("{}{}", summary, _sample_table(preview["sample"])) if preview["sample"] else summary

    def save_model(self, request, obj, form, change):
        data = {
            "name": form.cleaned_data["name"],
            "description": form.cleaned_data.get("description", ""),
            **form.rule_input,
        }
        try:
            if change:
                services.segment_update(obj, data=data)
            else:
                obj.pk = services.segment_create(**data, created_by=request.user).pk
        except ValidationError as exc:
            self.message_user(request, f"Not saved: {'; '.join(exc.messages)}", messages.ERROR)


# --- Campaigns -----------------------------------------------------------------------------


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = [
            "name",
            "kind",
            "template",
            "sender",
            "segment",
            "topic",
            "mps",
            "quiet_start",
            "quiet_end",
            "frequency_cap",
            "frequency_window",
            "validity",
            "schedule_type",
            "send_at",
            "cron",
            "cron_timezone",
            "trigger_event",
            "trigger_keyword",
            "trigger_conditions",
            "trigger_contact_rule",
        ]

    trigger_contact_rule = forms.CharField(
        required=False,
        label="Trigger contact rule",
        widget=forms.Textarea(attrs={"rows": 2, "cols": 100, "spellcheck": "false", "class": "segment-code"}),
        help_text='Conditions on the contact in the segment language, e.g. age >= 18 AND NOT topic = "vip" '
        "(or a JSON rule tree). Empty: every contact.",
    )
    trigger_conditions = forms.JSONField(
        required=False,
        decoder=DepthLimitedJSONDecoder,
        label="Trigger property conditions",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 100, "spellcheck": "false", "class": "segment-code"}),
        help_text='All must hold for the event\'s properties, e.g. [{"property": "total", "op": "gte", "value": 50}]. '
        "Ops: eq, neq, in, not_in, contains, icontains, gt, gte, lt, lte, exists, not_exists.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rule = self.instance.trigger_contact_rule if self.instance.pk else None
        if rule:
            self.initial["trigger_contact_rule"] = _query_text(rule)

    def clean_trigger_contact_rule(self) -> Any:
        text = (self.cleaned_data.get("trigger_contact_rule") or "").strip()
        if text.startswith("{"):
            try:
                return json.loads(text, cls=DepthLimitedJSONDecoder)
            except ValueError as exc:
                raise ValidationError(f"not valid JSON: {exc}") from None
        return text or None

    def clean_trigger_conditions(self) -> Any:
        return self.cleaned_data.get("trigger_conditions") or []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = Campaign(**{name: cleaned.get(name) for name in self.Meta.fields if name in cleaned})
        try:
            services.campaign_validate(candidate)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        return cleaned


class CampaignRunInline(admin.TabularInline):
    model = CampaignRun
    extra = 0
    can_delete = False
    fields = (
        "scheduled_for",
        "status",
        "progress",
        "total",
        "pending",
        "held",
        "sending",
        "sent",
        "skipped",
        "failed",
        "unknown",
        "outcomes_unknown",
        "snapshot_seconds",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields
    ordering = ("-started_at",)
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="progress")
    def progress(self, run: CampaignRun) -> str:
        return run_progress_bar(run)

    @admin.display(description="outcomes unknown")
    def outcomes_unknown(self, run: CampaignRun) -> str:
        return run_unknown_summary(run)


class CampaignActionInline(admin.TabularInline):
    model = CampaignAction
    extra = 0
    can_delete = False
    fields = ("created_at", "action", "from_status", "to_status", "actor", "detail")
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    verbose_name_plural = "audit list"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


# The bar's parts, in order from the left; what is left of the bar is pending.
PROGRESS_PARTS = ("sent", "failed", "unknown", "skipped", "sending", "held")
ACTIVE_RUN_STATUSES = ("running", "paused")


def run_progress(run: CampaignRun) -> dict[str, Any]:
    """A run's counters as the progress bar shows them (also served as JSON to refresh it)."""
    total = run.total
    done = run.sent + run.skipped + run.failed + run.unknown
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


ACTIONS = {
    "schedule": services.campaign_schedule,
    "launch": services.campaign_launch,
    "pause": services.campaign_pause,
    "resume": services.campaign_resume,
    "cancel": services.campaign_cancel,
}


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = (
        "name",
        "kind",
        "status",
        "schedule_type",
        "template",
        "sender",
        "segment",
        "current_progress",
        "outcomes_unknown",
        "updated_at",
        "analytics_link",
    )
    list_filter = ("status", "kind", "schedule_type", "sender")
    search_fields = ("name",)
    list_select_related = ("template", "sender", "segment")
    readonly_fields = (
        "status",
        "audience_count",
        "current_progress",
        "periodic_task_link",
        "analytics_link",
        "created_by",
        "created_at",
        "updated_at",
    )
    inlines = [CampaignRunInline, CampaignActionInline]
    change_form_template = "admin/campaigns/campaign/change_form.html"

    class Media:
        js = ("campaigns/run_progress.js",)
        css = {"all": ("campaigns/run_progress.css", "campaigns/segment_preview.css")}

    fieldsets = (
        (None, {"fields": ("name", "kind", "status", "template", "sender")}),
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
        ("Progress", {"fields": ("current_progress", "analytics_link")}),
        ("History", {"fields": ("created_by", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(unknown_total=Sum("runs__unknown"))

    @admin.display(description="outcomes unknown", ordering="unknown_total")
    def outcomes_unknown(self, obj: Campaign) -> str:
        total = getattr(obj, "unknown_total", None) or 0
        if not total:
            return "—"
        url = reverse("admin:campaigns_campaign_unknown_outcomes", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, total)

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
            }
            wanted = {
                "schedule": S.SCHEDULED in allowed and campaign.status == S.DRAFT,
                "launch": S.RUNNING in allowed and campaign.status in (S.DRAFT, S.SCHEDULED),
                "pause": S.PAUSED in allowed,
                "resume": campaign.status == S.PAUSED,
                "cancel": S.CANCELLED in allowed,
            }
            verbs = [(verb, labels[verb]) for verb, show in wanted.items() if show]
        unknown = getattr(campaign, "unknown_total", None) or 0
        extra_context = {**(extra_context or {}), "campaign_verbs": verbs, "unknown_total": unknown}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        from django.urls import path

        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<int:pk>/act/<str:verb>/", self.admin_site.admin_view(self.act_view), name=f"{prefix}_act"),
            path("<int:pk>/dry-run/", self.admin_site.admin_view(self.dry_run_view), name=f"{prefix}_dry_run"),
            path("progress/", self.admin_site.admin_view(self.progress_view), name=f"{prefix}_progress"),
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
            from audience.models import Contact

            return f"{Contact.objects.filter(consent_status='opted_in').count()} opted-in contacts (no segment)"
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

    def delete_model(self, request, obj):
        services.campaign_delete(obj)

    def act_view(self, request, pk: int, verb: str):
        from django.http import HttpResponseNotAllowed, HttpResponseRedirect
        from django.shortcuts import get_object_or_404

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = get_object_or_404(Campaign, pk=pk)
        if verb not in ACTIONS or not self.has_change_permission(request, campaign):
            self.message_user(request, "That action is not allowed.", messages.ERROR)
        else:
            try:
                ACTIONS[verb](campaign, actor=request.user)
            except ValidationError as exc:
                self.message_user(request, f"Could not {verb}: {'; '.join(exc.messages)}", messages.ERROR)
            else:
                campaign.refresh_from_db()
                self.message_user(request, f"{verb.capitalize()}: the campaign is now {campaign.get_status_display()}.")
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))

    def dry_run_view(self, request, pk: int):
        from django.shortcuts import get_object_or_404
        from django.template.response import TemplateResponse

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
            context["result"] = services.campaign_dry_run(campaign)
            for sample in context["result"]["samples"]:
                sample["phone"] = privacy.shown("phone", sample["phone"], privacy.request_sees_full(request))
        except ValidationError as exc:
            context["error"] = "; ".join(exc.messages)
        return TemplateResponse(request, "admin/campaigns/campaign/dry_run.html", context)


# --- Events (triggered campaigns) -------------------------------------------------------------


class EventRecipientInline(admin.TabularInline):
    model = Recipient
    fk_name = "event"
    extra = 0
    can_delete = False
    fields = ("run", "state", "reason", "detail", "release_at", "message", "sent_at")
    readonly_fields = fields
    verbose_name_plural = "answers (one recipient per matched campaign)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(PersonalFieldsMixin, admin.ModelAdmin):
    """Events are written by the API and inbound keywords only: read-only here."""

    personal_fields = {"properties": "json", "idempotency_key": "text"}
    list_display = ("name", "contact", "occurred_at", "received_at", "status", "matched")
    list_filter = ("name", "status", ("received_at", admin.DateFieldListFilter), "matched_campaigns")
    search_fields = ("name", "idempotency_key", "contact__phone")
    date_hierarchy = "received_at"
    list_select_related = ("contact",)
    raw_id_fields = ("contact",)
    fields = (
        "contact",
        "name",
        "properties",
        "occurred_at",
        "received_at",
        "idempotency_key",
        "status",
        "matched_at",
        "matched_campaigns",
    )
    readonly_fields = fields
    inlines = [EventRecipientInline]
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("matched_campaigns")

    @admin.display(description="matched campaigns")
    def matched(self, obj: Event) -> str:
        return ", ".join(campaign.name for campaign in obj.matched_campaigns.all()) or "—"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
