from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import ValidationError
from django.utils.html import format_html
from import_export.admin import ExportActionMixin

from audience import services
from audience.models import ConsentEvent, ConsentSource, ConsentStatus, Contact, Suppression, Topic
from audience.resources import ContactExportResource


class ContactActionForm(ActionForm):
    topic = forms.ModelChoiceField(Topic.objects.all(), required=False, help_text="For 'Add to topic'.")


class ConsentEventInline(admin.TabularInline):
    model = ConsentEvent
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


@admin.register(Contact)
class ContactAdmin(ExportActionMixin, admin.ModelAdmin):
    resource_classes = [ContactExportResource]
    list_display = ("phone", "name", "email", "channel", "locale", "consent_status", "topic_names", "created_at")
    list_filter = ("consent_status", TopicListFilter, "channel", "locale", "created_at")
    search_fields = ("phone", "name", "email")
    search_help_text = "Search by phone (E.164), name or email."
    show_full_result_count = False
    list_per_page = 50
    inlines = [ConsentEventInline]
    action_form = ContactActionForm
    actions = ["opt_out", "opt_in", "add_to_topic"]
    readonly_fields = (
        "consent_status",
        "consent_updated_at",
        "opted_in_at",
        "opted_out_at",
        "last_inbound_at",
        "created_at",
        "updated_at",
        "attributes_display",
    )
    fieldsets = (
        (None, {"fields": ("phone", "name", "email", "channel", "locale", "timezone")}),
        ("Attributes", {"fields": ("attributes_display", "attributes")}),
        ("Consent", {"fields": ("consent_status", "consent_updated_at", "opted_in_at", "opted_out_at")}),
        ("Activity", {"fields": ("last_inbound_at", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("topics")

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
        try:
            changed = services.consent_change_many(
                queryset.values_list("pk", flat=True),
                to_status=to_status,
                source=ConsentSource.ADMIN,
                actor=request.user,
                evidence={"door": "admin action"},
            )
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            return
        self.message_user(request, f"{changed} contact(s) changed to {ConsentStatus(to_status).label}.")

    @admin.action(description="Opt out selected contacts", permissions=["change"])
    def opt_out(self, request, queryset):
        self._change_consent(request, queryset, ConsentStatus.OPTED_OUT)

    @admin.action(description="Opt in selected contacts", permissions=["change"])
    def opt_in(self, request, queryset):
        self._change_consent(request, queryset, ConsentStatus.OPTED_IN)

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
class ConsentEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "contact", "from_status", "to_status", "source", "actor")
    list_filter = ("source", "to_status", "created_at")
    search_fields = ("contact__phone", "actor")
    list_select_related = ("contact",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    list_display = ("phone_hash", "reason", "source", "created_at")
    search_fields = ("phone_hash",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
