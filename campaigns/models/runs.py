"""Runs of a campaign and their recipients: one run per schedule tick, one recipient per contact."""

from __future__ import annotations

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models.functions import Now

from campaigns.models.campaigns import Campaign


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"


class CampaignRun(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    scheduled_for = models.DateTimeField(help_text="The schedule tick this run serves; one run per tick.")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING)
    mps = models.PositiveIntegerField()
    total = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0)
    held = models.PositiveIntegerField(default=0)
    # Claimed by a dispatcher, outcome not recorded yet (campaigns.services.dispatch).
    sending = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Sent or not, the provider could not tell yet: final for the run, resolved later (messaging reconcile, staff).
    unknown = models.PositiveIntegerField(default=0)
    skipped_by_reason = models.JSONField(default=dict, blank=True)
    # Experiment arms: eligible recipients by arm key (campaigns.services.arms.arm_key), control included.
    arm_sizes = models.JSONField(default=dict, blank=True)
    snapshot_seconds = models.FloatField(null=True, blank=True)
    cost_estimate = models.JSONField(
        null=True, blank=True, help_text="The cost estimated from the snapshot (campaigns.services.cost)."
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="Last batch a dispatcher took; upkeep restarts a run that went quiet."
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "scheduled_for"], name="run_once_per_tick"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign} @ {self.scheduled_for:%Y-%m-%d %H:%M}"


class RecipientState(models.TextChoices):
    PENDING = "pending", "Pending"
    HELD = "held", "Held (quiet hours)"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"
    UNKNOWN = "unknown", "Outcome unknown"


class SkipReason(models.TextChoices):
    OPTED_OUT = "opted_out", "Opted out"
    CAPPED = "capped", "Frequency cap reached"
    MISSING_VARIABLE = "missing_variable", "Missing variable"
    OUTSIDE_WINDOW = "outside_window", "Outside the WhatsApp 24 h window"
    EXPIRED = "expired", "Validity period expired"
    CANCELLED = "cancelled", "Campaign cancelled"
    CONTROL = "control", "Control group"


class Recipient(models.Model):
    # The unique (run, contact) index serves lookups by run: no separate index on run.
    run = models.ForeignKey(CampaignRun, on_delete=models.CASCADE, related_name="recipients", db_index=False)
    # No database FK to the contact: checking one locks every snapshotted contact row (FOR KEY SHARE),
    # which tripled the 1M-contact snapshot time. The snapshot selects ids from audience_contact in the
    # same statement, and deleting a contact removes its recipients through Django's CASCADE.
    # Indexed with the run (recipient_contact_run): a contact's recipients in a campaign's runs are
    # looked up for every counted message (is it the contact's first of the campaign?).
    contact = models.ForeignKey(
        "audience.Contact",
        on_delete=models.CASCADE,
        related_name="campaign_recipients",
        db_constraint=False,
        db_index=False,
    )
    state = models.CharField(max_length=16, choices=RecipientState.choices, default=RecipientState.PENDING)
    reason = models.CharField(max_length=32, blank=True, choices=SkipReason.choices)
    detail = models.CharField(max_length=255, blank=True)
    release_at = models.DateTimeField(null=True, blank=True)
    message = models.OneToOneField(
        "messaging.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="recipient"
    )
    created_at = models.DateTimeField(db_default=Now())
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Experiment arm (campaigns.services.arms): a Variant id, CONTROL_ARM (0) for the control group,
    # NULL outside an experiment or while waiting for a test's winner. No FK: see ``contact``.
    arm = models.BigIntegerField(null=True, blank=True)
    # Sent the winner after a test (not part of the comparison).
    rollout = models.BooleanField(default=False, db_default=False)
    # Set for a triggered campaign's recipient: the event it answers (one recipient per event and run).
    event = models.ForeignKey(
        "Event", null=True, blank=True, on_delete=models.CASCADE, related_name="recipients", db_index=False
    )

    class Meta:
        constraints = [
            # A snapshot holds a contact once; a triggered run holds it once per event.
            models.UniqueConstraint(
                fields=["run", "contact"], condition=models.Q(event__isnull=True), name="recipient_once_per_run"
            ),
            models.UniqueConstraint(
                fields=["event", "run"], condition=models.Q(event__isnull=False), name="recipient_once_per_event"
            ),
            models.CheckConstraint(condition=models.Q(state__in=RecipientState.values), name="recipient_state_valid"),
        ]
        indexes = [
            models.Index(fields=["run", "state"], name="recipient_run_state"),
            models.Index(fields=["contact", "run"], name="recipient_contact_run"),
            # The frequency cap scans recent recipients; rows arrive in time order, so BRIN is enough.
            BrinIndex(fields=["created_at"], name="recipient_created_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in run {self.run_id}: {self.state}"
