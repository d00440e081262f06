"""What a campaign's page lists below its form: its runs, with their progress, and its audit list."""

from __future__ import annotations

from django.contrib import admin

from campaigns import audit_words
from campaigns.admin.outcomes import run_unknown_summary
from campaigns.admin.progress import run_progress_bar
from campaigns.models import (
    CampaignAction,
    CampaignRun,
)


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
