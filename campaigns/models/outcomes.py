"""Conversions: goal events attributed to the campaign message (or click) that earned them.

Both tables are keyed by the event's id without a foreign key: event retention deletes old
events with plain SQL, and a conversion outlives its event (it copies what reports need). The
unique ``event_id`` is what makes attribution exactly-once, whatever replays or concurrent
sweeps do.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Conversion(models.Model):
    event_id = models.BigIntegerField(unique=True)
    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="conversions")
    run = models.ForeignKey("campaigns.CampaignRun", on_delete=models.CASCADE, related_name="conversions")
    recipient = models.ForeignKey(
        "campaigns.Recipient", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversions"
    )
    message = models.ForeignKey(
        "messaging.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversions"
    )
    contact_id = models.BigIntegerField(null=True, blank=True)
    model = models.CharField(max_length=16, help_text="The attribution model that gave it: last_message or last_click.")
    event_name = models.CharField(max_length=100)
    occurred_at = models.DateTimeField()
    touched_at = models.DateTimeField(help_text="When the message earning it was received, or its link clicked.")
    value = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["run", "occurred_at"], name="conversion_run_occurred")]

    def __str__(self) -> str:
        return f"conversion of event {self.event_id} for campaign {self.campaign_id}"


class AttributionCheck(models.Model):
    """An event the attribution sweep has looked at (attributed or not): it is never looked at again."""

    event_id = models.BigIntegerField(primary_key=True)
    checked_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"event {self.event_id} checked"


class AttributionHorizon(models.Model):
    """Per goal event name: every such event received before ``checked_until`` has been looked at.

    The attribution sweep reads events from a little before it (late commits) instead of a fixed
    lookback, so events left while the sweep was down are looked at whatever their age; a name
    without a row is read from its first event.
    """

    event_name = models.CharField(max_length=100, unique=True)
    checked_until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.event_name} checked until {self.checked_until:%Y-%m-%d %H:%M:%S}"
