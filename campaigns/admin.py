from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Sum
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join

from audience.admin import ContactAdmin
from campaigns import audit_words, selectors, services
from campaigns.admin_events import CappedCountPaginator, ContactEventInline, EventNameFilter, EventSearchMixin
from campaigns.admin_experiments import (
    EXPERIMENT_FIELDS,
    EXPERIMENT_FIELDSET,
    ExperimentFormMixin,
    VariantInline,
    experiment_state,
    winner_view,
)
from campaigns.admin_outcomes import run_unknown_summary, unknown_outcomes_view
from campaigns.models import (
    Campaign,
    CampaignAction,
    CampaignKind,
    CampaignRun,
    CampaignStatus,
    Event,
    Recipient,
    Segment,
    SkipReason,
)
from campaigns.segments import rules
from campaigns.segments.query import to_query
from campaigns.segments.rules import RuleError
from campaigns.services import SegmentError
from campaigns.services.cost import cost_words
from campaigns.services.launch_checks import campaign_variable_warning
from campaigns.services.lifecycle import TRANSITIONS, skip_reason_label
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
        if not instance.pk or instance.definition is None:
            self.initial["definition"] = ""  # an empty box, not the word null
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


class CampaignForm(ExperimentFormMixin, forms.ModelForm):
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
            "link_params",
            "goal_event",
            "goal_conditions",
            "goal_window",
            "goal_model",
            *EXPERIMENT_FIELDS,
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
    link_params = forms.JSONField(
        required=False,
        decoder=DepthLimitedJSONDecoder,
        label="Link parameters",
        widget=forms.Textarea(attrs={"rows": 2, "cols": 100, "spellcheck": "false", "class": "segment-code"}),
        help_text='Added to every tracked link unless the link has them, e.g. {"utm_source": "sms", '
        '"utm_campaign": "spring"}.',
    )
    goal_conditions = forms.JSONField(
        required=False,
        decoder=DepthLimitedJSONDecoder,
        label="Goal property conditions",
        widget=forms.Textarea(attrs={"rows": 2, "cols": 100, "spellcheck": "false", "class": "segment-code"}),
        help_text="All must hold for the goal event's properties, in the trigger conditions' language.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        send_at = self.fields.get("send_at")
        for part, words in zip(
            getattr(send_at.widget, "widgets", ()) if send_at else (), ("date", "time"), strict=False
        ):
            part.attrs["aria-label"] = f"Send at: {words}"  # the admin's split widget labels only the pair
        rule = self.instance.trigger_contact_rule if self.instance.pk else None
        if rule:
            self.initial["trigger_contact_rule"] = _query_text(rule)
        for name in ("goal_window", "goal_model"):  # left empty: the model's default (3 days, last message)
            if name in self.fields:
                self.fields[name].required = False

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

    def clean_goal_conditions(self) -> Any:
        return self.cleaned_data.get("goal_conditions") or []

    def clean_link_params(self) -> Any:
        return self.cleaned_data.get("link_params") or {}

    def clean_goal_window(self) -> Any:
        return self.cleaned_data.get("goal_window") or Campaign._meta.get_field("goal_window").get_default()

    def clean_goal_model(self) -> Any:
        return self.cleaned_data.get("goal_model") or Campaign._meta.get_field("goal_model").get_default()

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
    # Pending, held and sending are in the bar's text; the columns fit a 1,440 px window.
    fields = (
        "scheduled_for",
        "status",
        "progress",
        "total",
        "sent",
        "skipped",
        "failed",
        "outcomes_unknown",
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
    fields = ("created_at", "what", "status_change", "actor", "details")
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    verbose_name_plural = "audit list"

    @admin.display(description="what")
    def what(self, entry: CampaignAction) -> str:
        return entry.action_words

    @admin.display(description="status")
    def status_change(self, entry: CampaignAction) -> str:
        return audit_words.status_change_words(entry)

    @admin.display(description="details")
    def details(self, entry: CampaignAction) -> str:
        return audit_words.detail_words(entry.detail)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


# The bar's parts, in order from the left; what is left of the bar is pending.
PROGRESS_PARTS = ("sent", "failed", "unknown", "skipped", "sending", "held")
ACTIVE_RUN_STATUSES = ("running", "paused")


def run_progress(run: CampaignRun) -> dict[str, Any]:
    """A run's counters as the progress bar shows them (also served as JSON to refresh it)."""
    total = run.total
    # Recipients a cancel skipped were never dealt with: a cancelled run's bar shows how far it got.
    cancelled = (run.skipped_by_reason or {}).get(SkipReason.CANCELLED, 0)
    done = run.sent + run.skipped + run.failed + run.unknown - cancelled
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
        "status_label": run.get_status_display(),
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


FINISHED = (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED, CampaignStatus.FAILED)


class TestSendForm(forms.Form):
    contact = forms.CharField(
        label="As if to contact", help_text="A contact's phone or id: the message is rendered with their values."
    )
    to = forms.CharField(label="Send to", max_length=64, help_text="Your own number, in any common spelling.")

    def clean_contact(self):
        from audience.phones import InvalidPhone
        from audience.selectors import contact_by_id_or_phone

        value = self.cleaned_data["contact"]
        try:
            found = contact_by_id_or_phone(value)
        except InvalidPhone as exc:
            raise ValidationError(str(exc)) from None
        if found is None:
            raise ValidationError(f"No contact with id or phone {value.strip()!r}.")
        return found


# Irreversible actions: their button leads to a page that states what will happen, then asks.
CONFIRMED_VERBS = {"launch": "Launch now", "cancel": "Cancel campaign"}


def duration_words(seconds: float) -> str:
    """About how long, in words: "about 21 minutes", "under a minute"."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    return f"about {seconds / 3600:.1f} hours"


def launch_facts(result: dict) -> list[tuple[str, str]]:
    facts = [
        ("Audience", f"{result['audience']} contacts"),
        ("Sent now", str(result["pending"])),
        ("Held by quiet hours", str(result["held"])),
    ]
    facts += [(f"Excluded: {skip_reason_label(reason).lower()}", str(n)) for reason, n in result["excluded"].items()]
    facts.append(
        ("Estimated duration", f"{duration_words(result['estimated_seconds'])} at {result['mps']} messages a second")
    )
    facts.append(("Estimated cost", cost_words(result.get("cost"))))
    return facts


def cancel_facts(campaign: Campaign) -> list[tuple[str, str]]:
    run = campaign.runs.first()
    if run is None:
        return [("Runs", "none yet: nothing has been sent")]
    waiting = run.pending + run.held
    return [("Sent so far", str(run.sent)), ("Still waiting, to be skipped", str(waiting)), ("Failed", str(run.failed))]


ACTIONS = {
    "schedule": services.campaign_schedule,
    "launch": services.campaign_launch,
    "pause": services.campaign_pause,
    "resume": services.campaign_resume,
    "cancel": services.campaign_cancel,
    "duplicate": services.campaign_duplicate,
}


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
class EventAdmin(EventSearchMixin, PersonalFieldsMixin, admin.ModelAdmin):
    """Events are written by the API and inbound keywords only: read-only here."""

    personal_fields = {"properties": "json", "idempotency_key": "text"}
    list_display = ("name", "contact", "occurred_at", "received_at", "status", "matched")
    list_filter = (EventNameFilter, "status", ("received_at", admin.DateFieldListFilter), "matched_campaigns")
    search_fields = ("name", "idempotency_key", "contact__phone")
    paginator = CappedCountPaginator
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


ContactAdmin.inlines = [*ContactAdmin.inlines, ContactEventInline]  # a contact's page lists its latest events
