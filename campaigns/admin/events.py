"""Customer events in the admin: read-only, with the recipients they answered; a contact's page lists its latest."""

from __future__ import annotations

from django.contrib import admin

from audience.admin import ContactAdmin
from campaigns.admin.event_lists import CappedCountPaginator, ContactEventInline, EventNameFilter, EventSearchMixin
from campaigns.models import (
    Event,
    Recipient,
)
from config.privacy_admin import PersonalFieldsMixin

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
