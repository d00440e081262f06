from __future__ import annotations

import json
from collections import Counter

from django import forms
from django.contrib import admin
from django.contrib import messages as notices
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from audience.models import Contact
from audience.phones import InvalidPhone, normalize_phone
from config.json_limits import ADMIN_JSON_FORMFIELDS, DepthLimitedJSONDecoder
from config.privacy_admin import PersonalFieldsMixin
from config.roles import is_staff_member
from messaging.models import (
    Message,
    MessageResolution,
    MessageStatus,
    MessageTemplate,
    ProviderCallback,
    ResolutionAction,
    Sender,
)
from messaging.selectors import gives_up_text, unknown_gives_up_at
from messaging.services import outcomes
from messaging.services import senders as sender_service
from messaging.services import templates as template_service
from messaging.signals import template_saved

# Lookups call the provider one by one: a list action looks up this many at most.
LOOKUPS_AT_ONCE = 100


class MessageTemplateForm(forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = ["name", "channel", "locale", "body", "fallbacks", "content_sid", "content_variables"]

    def clean_fallbacks(self):
        return self.cleaned_data.get("fallbacks") or {}  # an emptied box means no fallbacks, not SQL NULL

    def clean_content_variables(self):
        return self.cleaned_data.get("content_variables") or {}

    def clean(self):
        data = super().clean()
        try:
            template_service.template_validate(
                channel=data.get("channel") or "",
                body=data.get("body") or "",
                fallbacks=data.get("fallbacks"),
                content_sid=data.get("content_sid") or "",
                content_variables=data.get("content_variables"),
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
        return data


class PreviewForm(forms.Form):
    contact = forms.CharField(
        required=False, help_text="A contact id or phone number.", widget=forms.TextInput(attrs={"size": 24})
    )
    sample = forms.CharField(
        required=False,
        help_text='Or sample values as JSON, e.g. {"name": "Amina", "attributes.city": "Nairobi"}.',
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )

    def clean_contact(self) -> Contact | None:
        value = (self.cleaned_data.get("contact") or "").strip()
        if not value:
            return None
        if value.isdigit() and Contact.objects.filter(pk=int(value)).exists():
            return Contact.objects.get(pk=int(value))
        try:
            contact = Contact.objects.filter(phone=normalize_phone(value)).first()
        except InvalidPhone as exc:
            raise ValidationError(str(exc)) from None
        if contact is None:
            raise ValidationError("no contact with that id or phone")
        return contact

    def clean_sample(self) -> dict | None:
        value = (self.cleaned_data.get("sample") or "").strip()
        if not value:
            return None
        try:
            sample = json.loads(value, cls=DepthLimitedJSONDecoder)
        except ValueError:
            raise ValidationError("sample values must be JSON") from None
        if not isinstance(sample, dict):
            raise ValidationError("sample values must be a JSON object")
        return sample


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    form = MessageTemplateForm
    formfield_overrides = ADMIN_JSON_FORMFIELDS
    list_display = ("name", "channel", "locale", "content_sid", "updated_at", "preview_link")
    list_filter = ("channel", "locale")
    search_fields = ("name", "body")
    readonly_fields = ("preview_link", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "channel", "locale", "body", "fallbacks", "preview_link")}),
        ("WhatsApp Content template", {"fields": ("content_sid", "content_variables")}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and not {"body", "fallbacks", "content_variables"} & set(form.changed_data):
            return
        for _receiver, warnings in template_saved.send(sender=MessageTemplate, template=obj):
            for warning in warnings or ():
                self.message_user(request, warning, notices.WARNING)

    def get_urls(self):
        preview = self.admin_site.admin_view(self.preview_view)
        return [path("<int:pk>/preview/", preview, name="messaging_messagetemplate_preview"), *super().get_urls()]

    @admin.display(description="preview")
    def preview_link(self, obj: MessageTemplate):
        if not obj or not obj.pk:
            return "Save the template first."
        url = reverse("admin:messaging_messagetemplate_preview", args=[obj.pk])
        return format_html('<a href="{}">Preview against a contact…</a>', url)

    def preview_view(self, request, pk: int):
        template = get_object_or_404(MessageTemplate, pk=pk)
        if not self.has_view_permission(request, template):
            raise PermissionDenied
        form = PreviewForm(request.GET or None)
        preview = None
        if form.is_valid():
            contact, sample = form.cleaned_data["contact"], form.cleaned_data["sample"]
            if contact is None and sample is None:
                contact = Contact.objects.order_by("pk").first()
            preview = template_service.template_preview(template, contact=contact, sample=sample)
            preview["contact"] = contact
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": template,
            "title": f"Preview: {template.name}",
            "form": form,
            "preview": preview,
            "content_variables_json": json.dumps(preview["content_variables"], ensure_ascii=False, indent=1)
            if preview and preview["content_variables"] is not None
            else "",
        }
        return TemplateResponse(request, "admin/messaging/messagetemplate/preview.html", context)


class SenderForm(forms.ModelForm):
    class Meta:
        model = Sender
        fields = ["name", "provider", "channel", "kind", "from_address", "messaging_service_sid", "mps", "is_active"]

    def clean(self):
        data = super().clean()
        errors = sender_service.sender_errors(
            data.get("channel") or "",
            data.get("kind") or "",
            data.get("from_address") or "",
            data.get("messaging_service_sid") or "",
        )
        for field, messages in errors.items():
            self.add_error(field, messages)
        return data


@admin.register(Sender)
class SenderAdmin(admin.ModelAdmin):
    form = SenderForm
    list_display = ("name", "channel", "kind", "provider", "from_address", "messaging_service_sid", "mps_shown")
    list_filter = ("channel", "kind", "provider", "is_active")
    search_fields = ("name", "from_address", "messaging_service_sid")

    @admin.display(description="MPS")
    def mps_shown(self, obj: Sender) -> str:
        return str(obj.effective_mps) if obj.mps else f"{obj.effective_mps} (default)"


class ProviderCallbackInline(admin.TabularInline):
    model = ProviderCallback
    extra = 0
    can_delete = False
    fields = ("received_at", "kind", "status", "error_code", "applied_at")
    readonly_fields = fields
    ordering = ("received_at", "id")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class MessageResolutionInline(admin.TabularInline):
    model = MessageResolution
    extra = 0
    can_delete = False
    fields = ("created_at", "action", "actor", "detail")
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    verbose_name_plural = "resolutions of an unknown outcome (audit)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(PersonalFieldsMixin, admin.ModelAdmin):
    personal_fields = {
        "to_address": "phone",
        "from_address": "phone",
        "body": "text",
        "error_message": "text",
        "idempotency_key": "text",
        "content_variables": "json",
        "render_context": "json",
        "media": "json",
    }
    list_display = ("created_at", "direction", "channel", "contact", "to_address", "from_address", "status")
    list_display += ("skip_reason", "error_code", "segments", "gives_up")
    list_filter = ("status", "direction", "channel", "sender", "created_at")
    search_fields = ("provider_sid", "to_address", "from_address", "contact__phone", "idempotency_key")
    list_select_related = ("contact",)
    show_full_result_count = False
    raw_id_fields = ("contact", "template", "sender")
    inlines = [ProviderCallbackInline, MessageResolutionInline]
    actions = ["lookup_again", "resend", "mark_failed"]
    change_form_template = "admin/messaging/message/change_form.html"

    readonly_fields = ["gives_up", *(field.name for field in Message._meta.fields if field.name != "id")]

    @admin.display(description="outcome unknown: gives up")
    def gives_up(self, obj: Message) -> str:
        return gives_up_text(unknown_gives_up_at(obj))

    # --- Outcomes unknown (messaging.services.outcomes; a campaign's messages with their recipients) ---

    def has_resolve_permission(self, request, obj=None) -> bool:
        return is_staff_member(request.user)

    def _resolve(self, request, ids: list[int], action: str) -> None:
        try:
            statuses = outcomes.messages_resolve_any(ids, action, actor=request.user)
        except ValidationError as exc:
            self.message_user(request, f"Not done: {'; '.join(exc.messages)}", notices.ERROR)
            return
        after = ", ".join(f"{n} {status}" for status, n in sorted(Counter(statuses.values()).items()))
        self.message_user(request, f"{ResolutionAction(action).label}: {len(statuses)} message(s) ({after}).")

    @staticmethod
    def _unknown(queryset, limit: int | None = None) -> list[int]:
        """The selected messages whose outcome is unknown (the others are not resolvable)."""
        return list(queryset.filter(status=MessageStatus.UNKNOWN).order_by("pk").values_list("pk", flat=True)[:limit])

    @admin.action(description="Outcome unknown: look up again now", permissions=["resolve"])
    def lookup_again(self, request, queryset):
        self._resolve(request, self._unknown(queryset, LOOKUPS_AT_ONCE), ResolutionAction.LOOKUP)

    @admin.action(description="Outcome unknown: resend (a new attempt)", permissions=["resolve"])
    def resend(self, request, queryset):
        self._resolve(request, self._unknown(queryset), ResolutionAction.RESEND)

    @admin.action(description="Outcome unknown: mark failed", permissions=["resolve"])
    def mark_failed(self, request, queryset):
        self._resolve(request, self._unknown(queryset), ResolutionAction.FAIL)

    def get_urls(self):
        resolve = self.admin_site.admin_view(self.resolve_view)
        return [path("<int:pk>/resolve/<str:action>/", resolve, name="messaging_message_resolve"), *super().get_urls()]

    def resolve_view(self, request, pk: int, action: str):
        message = get_object_or_404(Message, pk=pk)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_resolve_permission(request, message):
            raise PermissionDenied
        self._resolve(request, [message.pk], action)
        return HttpResponseRedirect(reverse("admin:messaging_message_change", args=[pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        message = self.get_object(request, object_id)
        can = message is not None and message.status == MessageStatus.UNKNOWN and self.has_resolve_permission(request)
        extra_context = {**(extra_context or {}), "resolve_actions": ResolutionAction.choices if can else []}
        return super().change_view(request, object_id, form_url, extra_context)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(MessageResolution)
class MessageResolutionAdmin(admin.ModelAdmin):
    """The audit list of staff resolutions of unknown outcomes: written by the service only."""

    list_display = ("created_at", "action", "actor", "message", "detail")
    list_filter = ("action", "created_at")
    search_fields = ("actor",)
    raw_id_fields = ("message",)
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ProviderCallback)
class ProviderCallbackAdmin(PersonalFieldsMixin, admin.ModelAdmin):
    personal_fields = {"payload": "json"}
    list_display = ("received_at", "kind", "provider_sid", "status", "error_code", "message", "applied_at")
    list_filter = ("kind", "status", "received_at")
    search_fields = ("provider_sid",)
    raw_id_fields = ("message",)
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


from messaging import admin_prices  # noqa: E402,F401 - registers the price table's admin
