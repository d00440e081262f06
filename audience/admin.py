from __future__ import annotations

import csv
import io
import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST
from import_export.admin import ExportActionMixin, ImportMixin
from import_export.forms import ImportForm

from audience import selectors, services
from audience.admin_consent import ContactAdminForm, consent_change_from_form, refused_message
from audience.ingest import selectors as ingest_selectors
from audience.ingest import services as ingest_services
from audience.models import (
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    Contact,
    ImportJob,
    ImportSource,
    ImportStatus,
    Topic,
)
from audience.phones import InvalidPhone, country_choices, normalize_phone
from audience.resources import ContactExportResource, ContactImportResource
from config import privacy
from config.json_limits import ADMIN_JSON_FORMFIELDS
from config.privacy_admin import PersonalFieldsMixin
from config.spreadsheet import csv_download

PREVIEW_ROWS = 1000
PREVIEW_SHOWN = 200


class ContactActionForm(ActionForm):
    topic = forms.ModelChoiceField(Topic.objects.all(), required=False, help_text="For 'Add to topic'.")


class ConsentEventInline(PersonalFieldsMixin, admin.TabularInline):
    model = ConsentEvent
    personal_fields = {"evidence": "json"}
    extra = 0
    can_delete = False
    fields = ("created_at", "from_status", "to_status", "source", "actor", "evidence")
    readonly_fields = fields
    ordering = ("-created_at", "-id")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class TopicListFilter(admin.SimpleListFilter):
    title = "topic"
    parameter_name = "topic"

    def lookups(self, request, model_admin):
        return [(topic.pk, topic.name) for topic in Topic.objects.all()[:200]]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(contacttopic__topic_id=self.value())
        return queryset


class ContactImportForm(ImportForm):
    """django-import-export's upload form plus the engine's options; the format is detected from the file."""

    default_consent = forms.ChoiceField(
        label="Consent",
        choices=ConsentStatus.choices,
        required=False,
        widget=forms.RadioSelect,
        help_text="The consent the file's new contacts gave, for rows that give none. Required when the file "
        "has no consent column: nothing is assumed.",
    )
    default_country = forms.ChoiceField(
        label="Country of local numbers",
        choices=(),
        required=False,
        help_text="Numbers written without a country code (0722 123456) are read as this country's.",
    )
    topic = forms.CharField(required=False, help_text="Optional: a topic added to every imported contact.")
    skip_existing = forms.BooleanField(required=False, help_text="Leave contacts that already exist untouched.")

    def __init__(self, formats, resources, **kwargs):
        super().__init__(formats, resources, **kwargs)
        del self.fields["format"]
        self.fields["default_country"].choices = [("", "None: every number has its country code"), *country_choices()]
        self.fields["default_country"].initial = settings.PHONE_DEFAULT_COUNTRY
        self.fields["import_file"].help_text = "CSV (any delimiter, UTF-8 or Windows-1252), JSON array or JSON Lines."
        self.fields["import_file"].widget.attrs.update({"accept": ".csv,.txt,.json,.jsonl,.ndjson", "class": ""})

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("import_file")
        if upload is not None and upload.size > settings.IMPORT_MAX_BYTES:
            self.add_error(
                "import_file",
                f"The file is {upload.size} bytes; the limit is {settings.IMPORT_MAX_BYTES} bytes (IMPORT_MAX_BYTES).",
            )
        try:
            cleaned["options"] = ingest_services.import_options_clean(
                default_consent=cleaned.get("default_consent", ""),
                topic=cleaned.get("topic", ""),
                update_existing=not cleaned.get("skip_existing"),
                default_country=cleaned.get("default_country", ""),
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        return cleaned


class ContactImportMixin(ImportMixin):
    """The import page of django-import-export, with every file handed to the ingest engine.

    Upload -> the file is saved and the first rows are validated (dry run, per-row
    problems shown) -> confirm -> a small file is ingested at once, a big one by a
    Celery worker, and the job page shows a progress bar until it is done.
    """

    import_template_name = "admin/audience/contact/import.html"
    import_form_class = ContactImportForm
    import_export_change_list_template = "admin/import_export/change_list_import_export.html"

    def get_import_resource_classes(self, request):
        return [ContactImportResource]

    def has_import_permission(self, request) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def get_urls(self):
        job_urls = [
            path("import/<int:job_id>/", self.admin_site.admin_view(self.import_job_view), name="audience_import_job"),
            path(
                "import/<int:job_id>/status/",
                self.admin_site.admin_view(self.import_job_status),
                name="audience_import_job_status",
            ),
            path(
                "import/sample.csv",
                self.admin_site.admin_view(self.import_sample_csv),
                name="audience_import_sample",
            ),
            path(
                "import/<int:job_id>/errors.csv",
                self.admin_site.admin_view(self.import_job_errors),
                name="audience_import_job_errors",
            ),
        ]
        return job_urls + super().get_urls()

    def import_action(self, request, **kwargs):
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = self.create_import_form(request)
        context = {}
        if request.method == "POST" and form.is_valid():
            try:
                job = ingest_services.import_job_create(
                    source=ImportSource.ADMIN,
                    upload=form.cleaned_data["import_file"],
                    options=form.cleaned_data["options"],
                    actor=request.user.get_username(),
                )
            except ValidationError as exc:
                for name, errors in exc.message_dict.items():
                    form.add_error(name if name in form.fields else "import_file", errors)
            else:
                upload = form.cleaned_data["import_file"]  # still on this machine: no download for the preview
                preview = ingest_services.import_preview(job, limit=PREVIEW_ROWS, upload=upload)
                ingest_services.import_preview_record(job, preview)
                context.update(job=job, preview=preview, preview_rows=rows_shown(preview.rows[:PREVIEW_SHOWN]))
        return self._import_page(request, form, context)

    def _import_page(self, request, form, extra: dict) -> TemplateResponse:
        resource = ContactImportResource()
        context = {
            **self.admin_site.each_context(request),
            "title": "Import contacts",
            "form": form,
            "opts": self.model._meta,
            "media": self.media + form.media,
            "fields_list": [(resource.get_display_name(), [f.column_name for f in resource.get_user_visible_fields()])],
            **extra,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, [self.import_template_name], context)

    @method_decorator(require_POST)
    def process_import(self, request, **kwargs):
        if not self.has_import_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=request.POST.get("job"), source=ImportSource.ADMIN)
        second_look = (job.details or {}).get("preview_needs_second_look")
        if job.status == ImportStatus.PENDING and second_look and not request.POST.get("accept_errors"):
            self.message_user(
                request,
                f"Import #{job.pk} was not started: too many of the rows checked have errors and would be left out. "
                "Read the problems, then tick the box to import the rest anyway.",
                messages.ERROR,
            )
            try:
                preview = ingest_services.import_preview(job, limit=PREVIEW_ROWS)
            except FileNotFoundError:
                return redirect("admin:audience_contact_import")
            context = {"job": job, "preview": preview, "preview_rows": rows_shown(preview.rows[:PREVIEW_SHOWN])}
            return self._import_page(request, self.create_import_form(request), context)
        if job.status != ImportStatus.PENDING:
            self.message_user(request, f"Import #{job.pk} was already confirmed.", messages.WARNING)
        else:
            try:
                ingest_services.import_job_confirm(job)
            except ingest_services.ImportRejected as exc:
                self.message_user(request, f"Import #{job.pk} cannot start: {'; '.join(exc.messages)}.", messages.ERROR)
        return redirect("admin:audience_import_job", job_id=job.pk)

    def import_job_view(self, request, job_id: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=job_id)
        full = privacy.request_sees_full(request)
        problems = list(ingest_selectors.import_job_errors(job)[:PREVIEW_SHOWN])
        for problem in problems:
            problem.value = ingest_selectors.problem_value_shown(problem.column, problem.value, full)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import #{job.pk}: {privacy.shown('text', job.file_name, full)}",
            "opts": self.model._meta,
            "job": job,
            "status_url": reverse("admin:audience_import_job_status", args=[job.pk]),
            "errors_url": reverse("admin:audience_import_job_errors", args=[job.pk]),
            "problems": problems,
        }
        return TemplateResponse(request, "admin/audience/contact/import_job.html", context)

    def import_job_status(self, request, job_id: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=job_id)
        return JsonResponse(import_job_progress(job))

    def import_sample_csv(self, request):
        if not self.has_import_permission(request):
            raise PermissionDenied
        return sample_csv_response()

    def import_job_errors(self, request, job_id: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=job_id)
        return error_csv_response(job, full=privacy.request_sees_full(request))


def rows_shown(rows: list[dict]) -> list[dict]:
    """Dry-run rows in people's words: topics as a list, attributes as name and value pairs."""
    shown = []
    for row in rows:
        topics = (row.get("topics") or "").strip("{}")
        attributes = json.loads(row["attributes"]) if row.get("attributes") else {}
        shown.append(
            {
                **row,
                "topics": ", ".join(topic.strip('"') for topic in topics.split(",") if topic),
                "attributes": sorted(attributes.items()),
            }
        )
    return shown


def import_job_progress(job: ImportJob) -> dict:
    counts = ("total_rows", "created_count", "updated_count", "unchanged_count", "skipped_count", "invalid_count")
    counts += ("duplicate_count", "warning_count")
    return {
        "id": job.pk,
        "status": job.status,
        "status_label": job.outcome,
        "stage": job.stage,
        "progress": round(job.progress, 1),
        "finished": job.is_finished,
        "error": job.error,
        **{name: getattr(job, name) for name in counts},
    }


# The sample offered on the import page: every column the importer reads, and typed attributes.
SAMPLE_HEADER = ("phone", "name", "email", "channel", "locale", "timezone", "consent", "topics")
SAMPLE_ATTRIBUTES = ("city", "age", "vip", "signup_date")
SAMPLE_ROWS = (
    (
        "+254712345678",
        "Amina Otieno",
        "amina@example.com",
        "whatsapp",
        "sw",
        "Africa/Nairobi",
        "opted_in",
        "promotions|news",
        "Nairobi",
        "34",
        "true",
        "2026-03-14",
    ),
    (
        "0044 7911 123456",
        "Oliver Smith",
        "",
        "sms",
        "en-GB",
        "Europe/London",
        "opted_in",
        "news",
        "London",
        "52",
        "false",
        "2025-11-02",
    ),
    (
        "+1 (415) 555-0142",
        "María López",
        "maria@example.com",
        "sms",
        "es-US",
        "America/Los_Angeles",
        "opted_out",
        "",
        "San Francisco",
        "27",
        "false",
        "2026-07-30",
    ),
)


def sample_csv_response() -> HttpResponse:
    """A small CSV the importer accepts as it is: a starting point for a real file."""
    lines = io.StringIO()
    writer = csv.writer(lines, lineterminator="\n")
    writer.writerow(SAMPLE_HEADER + SAMPLE_ATTRIBUTES)
    writer.writerows(SAMPLE_ROWS)
    response = HttpResponse(lines.getvalue().encode(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="contacts-sample.csv"'
    return response


def error_csv_response(job: ImportJob, *, full: bool) -> StreamingHttpResponse:
    return csv_download(ingest_selectors.import_job_error_rows(job, full=full), f"import-{job.pk}-errors.csv")


@admin.register(Contact)
class ContactAdmin(PersonalFieldsMixin, ContactImportMixin, ExportActionMixin, admin.ModelAdmin):
    resource_classes = [ContactExportResource]
    formfield_overrides = ADMIN_JSON_FORMFIELDS
    personal_fields = {"phone": "phone", "name": "name", "email": "email"}
    list_display = ("phone", "name", "email", "channel", "locale", "consent_status", "topic_names", "created_at")
    list_filter = ("consent_status", TopicListFilter, "channel", "locale", "created_at")
    search_fields = ("phone", "name", "email")
    search_help_text = "Search by phone (E.164), name or email."
    show_full_result_count = False
    list_per_page = 50
    inlines = [ConsentEventInline]
    form = ContactAdminForm
    action_form = ContactActionForm
    actions = ["opt_out", "opt_in", "add_to_topic", "erase"]
    readonly_fields = (
        "consent_status",
        "consent_updated_at",
        "opted_in_at",
        "opted_out_at",
        "last_inbound_at",
        "created_at",
        "updated_at",
        "attributes_display",
        "messages_link",
    )
    fieldsets = (
        (None, {"fields": ("phone", "name", "email", "channel", "locale", "timezone")}),
        ("Attributes", {"fields": ("attributes_display", "attributes")}),
        ("Consent", {"fields": ("consent_status", "consent_updated_at", "opted_in_at", "opted_out_at")}),
        ("Activity", {"fields": ("messages_link", "last_inbound_at", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("topics")

    @admin.display(description="messages")
    def messages_link(self, obj: Contact) -> str:
        if not obj.pk:
            return "—"
        url = reverse("admin:messaging_message_changelist") + f"?contact__id__exact={obj.pk}"
        return format_html('<a href="{}">This person\'s messages, sent and received</a>', url)

    def get_export_resource_kwargs(self, request, **kwargs):
        # Every export format (CSV, TSV, JSON, HTML...) is written by the resource: it masks.
        return {**super().get_export_resource_kwargs(request, **kwargs), "full": privacy.request_sees_full(request)}

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not self.has_change_permission(request, obj):
            return fieldsets
        consent = ("Change consent", {"fields": ContactAdminForm.CONSENT_FIELDS})
        return (*fieldsets[:3], consent, *fieldsets[3:])

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.actor = request.user  # the class is made for this request
        return form

    @admin.display(description="topics")
    def topic_names(self, obj: Contact) -> str:
        return ", ".join(topic.name for topic in obj.topics.all())

    @admin.display(description="attributes (read)")
    def attributes_display(self, obj: Contact):
        if not obj.attributes:
            return "—"
        rows = format_html(
            "".join("<tr><th>{}</th><td>{}</td><td><small>{}</small></td></tr>" for _ in obj.attributes),
            *[
                part
                for key, value in sorted(obj.attributes.items())
                for part in (key, json.dumps(value, ensure_ascii=False), type(value).__name__)
            ],
        )
        return format_html("<table>{}</table>", rows)

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
        try:
            if change:
                services.contact_update(obj, data=data)
                consent_change_from_form(request, obj, form)
            else:
                created = services.contact_create(
                    phone=form.cleaned_data["phone"],
                    source=ConsentSource.ADMIN,
                    actor=request.user,
                    **{k: v for k, v in data.items() if k != "phone"},
                )
                obj.pk = created.pk
        except ValidationError as exc:
            self.message_user(request, f"Not saved: {'; '.join(exc.messages)}", messages.ERROR)

    def delete_model(self, request, obj):
        services.contact_delete(obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for contact in queryset:
            services.contact_delete(contact, actor=request.user)

    def _change_consent(self, request, queryset, to_status):
        result = services.consent_change_many(
            queryset.values_list("pk", flat=True),
            to_status=to_status,
            source=ConsentSource.ADMIN,
            actor=request.user,
            evidence={"door": "admin action"},
        )
        self.message_user(request, f"{result.changed} contact(s) changed to {ConsentStatus(to_status).label}.")
        if result.refused:
            self.message_user(request, refused_message(result.refused), messages.WARNING)

    @admin.action(description="Opt out selected contacts", permissions=["change"])
    def opt_out(self, request, queryset):
        self._change_consent(request, queryset, ConsentStatus.OPTED_OUT)

    @admin.action(description="Opt in selected contacts", permissions=["change"])
    def opt_in(self, request, queryset):
        self._change_consent(request, queryset, ConsentStatus.OPTED_IN)

    @admin.action(description="Erase selected contacts (personal data; suppression kept)", permissions=["delete"])
    def erase(self, request, queryset):
        erased = 0
        for contact in queryset.order_by("pk"):
            services.contact_erase(contact, actor=request.user)
            erased += 1
        self.message_user(request, f"{erased} contact(s) erased; opted-out phones stay suppressed.")

    @admin.action(description="Add selected contacts to topic", permissions=["change"])
    def add_to_topic(self, request, queryset):
        topic_id = request.POST.get("topic")
        if not topic_id:
            self.message_user(request, "Choose a topic in the box next to the action.", messages.ERROR)
            return
        topic = Topic.objects.get(pk=topic_id)
        added = services.contacts_add_topic(queryset.values_list("pk", flat=True), topic)
        self.message_user(request, f"{added} contact(s) added to {topic.name}.")


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "created_at")
    search_fields = ("name",)


@admin.register(ConsentEvent)
class ConsentEventAdmin(PersonalFieldsMixin, admin.ModelAdmin):
    personal_fields = {"evidence": "json"}
    list_display = ("seq", "created_at", "contact", "kind", "from_status", "to_status", "source", "actor")
    list_filter = ("kind", "source", "to_status", "created_at")
    readonly_fields = ("seq", "chain_hash_hex")
    search_fields = ("contact__phone", "actor")
    search_help_text = "A phone number also finds the events an erased contact left behind."
    list_select_related = ("contact",)

    @admin.display(description="chain hash")
    def chain_hash_hex(self, event: ConsentEvent) -> str:
        return bytes(event.chain_hash).hex()

    def get_search_results(self, request, queryset, search_term):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            e164 = normalize_phone(search_term)
        except InvalidPhone:
            return queryset, may_have_duplicates
        return queryset | selectors.phone_consent_history(e164), may_have_duplicates

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ImportJob)
class ImportJobAdmin(PersonalFieldsMixin, admin.ModelAdmin):
    personal_fields = {"file_name": "text", "details": "json", "error": "text"}
    list_display = ("id", "file_name", "outcome_display", "progress_display", "total_rows", "created_count")
    list_display += ("updated_count",)
    list_display += ("invalid_count", "source", "created_by", "created_at")
    list_filter = ("status", "source", "created_at")
    search_fields = ("file_name", "created_by")
    actions = ["rerun"]
    readonly_fields = [field.name for field in ImportJob._meta.fields] + ["job_page"]

    @admin.display(description="status", ordering="status")
    def outcome_display(self, job: ImportJob) -> str:
        return job.outcome

    @admin.display(description="progress")
    def progress_display(self, job: ImportJob):
        return format_html('<progress max="100" value="{}"></progress> {}%', job.progress, round(job.progress))

    @admin.display(description="progress page")
    def job_page(self, job: ImportJob):
        url = reverse("admin:audience_import_job", args=[job.pk])
        return format_html('<a href="{}">progress and problems</a>', url)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_rerun_permission(self, request) -> bool:
        return request.user.has_perm("audience.change_importjob")

    @admin.action(description="Re-run selected failed or stalled imports", permissions=["rerun"])
    def rerun(self, request, queryset):
        for job in queryset:
            try:
                ingest_services.import_job_retry(job)
            except ValidationError as exc:
                self.message_user(request, f"#{job.pk}: {'; '.join(exc.messages)}", messages.WARNING)
            else:
                self.message_user(request, f"#{job.pk} queued again.")
