"""Alert rules, their state per subject, and the alert history (imported by reporting.models)."""

from __future__ import annotations

from django.db import models


class AlertKind(models.TextChoices):
    SEND_FAILURE_RATE = "send_failure_rate", "Send failure rate over the window above the threshold (0-1)"
    QUEUE_DEPTH = "queue_depth", "Tasks waiting in a queue above the threshold"
    QUEUE_OLDEST_TASK = "queue_oldest_task", "Oldest task waiting in a queue older than the threshold (minutes)"
    NO_WORKERS = "no_workers", "Celery workers answering a ping below the threshold"
    BEAT_STALE = "beat_stale", "celery-beat's last tick older than the threshold (minutes)"
    WEBHOOK_SIGNATURE_FAILURES = "webhook_signature_failures", "Refused webhooks over the window above the threshold"
    RUN_STUCK = "run_stuck", "Running campaign run without progress for longer than the threshold (minutes)"
    SENDER_THROTTLED = "sender_throttled", "A sender's 429 / 63018 errors over the window above the threshold"


# Kinds whose alert fires when the value falls below the threshold; the others fire above it.
FIRES_BELOW = frozenset({AlertKind.NO_WORKERS})


class AlertRule(models.Model):
    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    enabled = models.BooleanField(default=True)
    threshold = models.FloatField(help_text="Fires above this value (below it for 'no workers').")
    clear_threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="Hysteresis: once firing, clears only at or below this value (at or above for 'no workers'). "
        "Empty means the threshold.",
    )
    window_minutes = models.PositiveIntegerField(default=5, help_text="Window of rates and counts.")
    clear_after_minutes = models.PositiveIntegerField(
        default=5, help_text="The condition must stay clear this long before the alert clears (no flapping)."
    )
    params = models.JSONField(
        default=dict,
        blank=True,
        help_text='Kind-specific: {"min_messages": 20} for the failure rate, {"queues": ["celery"]} for queues, '
        '{"error_codes": ["429", "20429", "63018"]} for throttling.',
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=AlertKind.values), name="alertrule_kind_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    def breaches(self, value: float | None) -> bool:
        if value is None:
            return False
        return value < self.threshold if self.kind in FIRES_BELOW else value > self.threshold

    def clears(self, value: float | None) -> bool:
        if value is None:  # the subject is gone (a queue emptied, a run finished)
            return True
        limit = self.threshold if self.clear_threshold is None else self.clear_threshold
        return value >= limit if self.kind in FIRES_BELOW else value <= limit


class AlertState(models.Model):
    """Whether a rule is firing for one subject; moved only by conditional UPDATEs."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="states")
    subject = models.CharField(max_length=200, blank=True, help_text="A queue, sender, run; empty for the platform.")
    firing = models.BooleanField(default=False)
    value = models.FloatField(null=True, blank=True)
    fired_at = models.DateTimeField(null=True, blank=True)
    clear_since = models.DateTimeField(
        null=True, blank=True, help_text="While firing: since when the condition has been clear."
    )
    cleared_at = models.DateTimeField(null=True, blank=True)
    evaluated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rule", "subject"]
        constraints = [models.UniqueConstraint(fields=["rule", "subject"], name="alertstate_rule_subject_unique")]

    def __str__(self) -> str:
        return f"{self.rule} [{self.subject or '-'}]: {'firing' if self.firing else 'ok'}"


class AlertNotice(models.Model):
    """One alert or recovery, as recorded and sent; never updated but for its delivery stamps."""

    class Kind(models.TextChoices):
        FIRED = "fired", "Fired"
        CLEARED = "cleared", "Cleared"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="notices")
    subject = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    value = models.FloatField(null=True, blank=True)
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    posted_at = models.DateTimeField(null=True, blank=True, help_text="When it was POSTed to ALERT_WEBHOOK_URL.")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.text
