"""The audience's admin: contacts (with their import pages), topics, consent events and import jobs."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html
from import_export.admin import ExportActionMixin

from audience import selectors, services
from audience.admin_consent import ContactAdminForm, consent_change_from_form, refused_message
from audience.admin_forms import ContactActionForm, TopicListFilter
from audience.admin_imports import ContactImportMixin
from audience.ingest import services as ingest_services
from audience.models import ConsentEvent, ConsentSource, ConsentStatus, Contact, ImportJob, Topic
from audience.phones import InvalidPhone, normalize_phone
from audience.resources import ContactExportResource
from config import privacy
from config.json_limits import ADMIN_JSON_FORMFIELDS
from config.privacy_admin import PersonalFieldsMixin


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
                    **{name: value for name, value in data.items() if name != "phone"},
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
