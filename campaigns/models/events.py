"""Events: what a contact did, posted to the events API (or an inbound keyword); triggered campaigns match them."""

from __future__ import annotations

from django.contrib.postgres.indexes import BrinIndex
from django.db import models

from campaigns.models.campaigns import Campaign


class EventStatus(models.TextChoices):
    PENDING = "pending", "Stored, not matched yet"
    MATCHED = "matched", "Matched"
    UNKNOWN_CONTACT = "unknown_contact", "Unknown contact"


class Event(models.Model):
    """Something a contact did, posted to /api/v1/events/ (or an inbound keyword); never edited.

    ``idempotency_key`` is unique: a replay finds the first event, and two simultaneous requests
    with one key make one event. ``request_hash`` tells a replay from a different body. An event
    is stored ``pending`` and matched by a worker (campaigns.services.events); one for a phone
    the platform does not know is kept as ``unknown_contact`` with the phone's keyed hash only.
    """

    contact = models.ForeignKey(
        "audience.Contact", null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    contact_phone_hash = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=100)
    properties = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    idempotency_key = models.CharField(max_length=255, unique=True)
    request_hash = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=EventStatus.choices, default=EventStatus.PENDING)
    matched_at = models.DateTimeField(null=True, blank=True)
    matched_campaigns = models.ManyToManyField(Campaign, blank=True, related_name="events")

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["name", "received_at"], name="event_name_received"),
            models.Index(fields=["contact", "received_at"], name="event_contact_received"),
            BrinIndex(fields=["received_at"], name="event_received_brin"),
            # The matchers' queue: small, since events leave it within seconds.
            models.Index(fields=["id"], condition=models.Q(status="pending"), name="event_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.contact_id}) at {self.occurred_at:%Y-%m-%d %H:%M}"
