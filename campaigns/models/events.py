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
    is stored ``pending`` with a row in PendingEvent, the matchers' queue, and matched by a worker
    (campaigns.services.events); one for a phone the platform does not know is kept as
    ``unknown_contact`` with the phone's keyed hash only.

    No index holds ``status`` or ``matched_at``, and the table's fillfactor is 50 (migration
    0016): marking an event matched rewrites its row within its page (a HOT update) instead of
    adding an entry to each index, for twice the table's size.
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
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.contact_id}) at {self.occurred_at:%Y-%m-%d %H:%M}"


class PendingEvent(models.Model):
    """An event waiting for a matcher: stored with the event, deleted by the matcher that answers it.

    Small, since events leave it within seconds. No foreign key constraint (it would lock the
    event's row on every insert): a row whose event was deleted before it was matched is deleted
    by the next matcher that meets it.
    """

    event = models.OneToOneField(
        Event, primary_key=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )

    def __str__(self) -> str:
        return f"event {self.event_id} pending"
