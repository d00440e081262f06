"""Admin: rules are edited here; states and the alert history are read-only."""

from django.contrib import admin

from config.json_limits import ADMIN_JSON_FORMFIELDS
from reporting.alerting.models import AlertNotice, AlertRule, AlertState


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    formfield_overrides = ADMIN_JSON_FORMFIELDS
    list_display = ["name", "kind", "enabled", "threshold", "clear_threshold", "window_minutes", "clear_after_minutes"]
    list_filter = ["kind", "enabled"]
    list_editable = ["enabled", "threshold"]
    search_fields = ["name", "description"]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyAdmin):
    list_display = ["rule", "subject", "firing", "value", "fired_at", "clear_since", "cleared_at", "evaluated_at"]
    list_filter = ["firing", "rule"]


@admin.register(AlertNotice)
class AlertNoticeAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "rule", "subject", "value", "emailed_at", "posted_at"]
    list_filter = ["kind", "rule"]
    search_fields = ["text", "subject"]
    date_hierarchy = "created_at"
