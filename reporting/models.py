"""Reporting's own tables: per-run message counters and the state each message was counted in.

Nothing here is a source of truth: ``reporting.counters.counters_recount`` rebuilds both tables
from messaging and campaigns rows at any time.
"""

from __future__ import annotations

from django.db import models

from messaging.models import MessageStatus


class MessageStatusCounter(models.Model):
    """How many of a run's campaign messages are in ``status`` (with this error code and currency).

    Kept up to date as statuses change (``reporting.counters``); the campaign summary reads these
    rows instead of grouping a million messages.
    """

    run_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField(db_index=True)
    status = models.CharField(max_length=16, choices=MessageStatus.choices)
    error_code = models.CharField(max_length=16, blank=True, default="")
    price_unit = models.CharField(max_length=3, blank=True, default="")
    count = models.BigIntegerField(default=0)
    price_total = models.DecimalField(max_digits=16, decimal_places=5, default=0)
    priced = models.BigIntegerField(default=0, help_text="How many of them have a known price.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run_id", "status", "error_code", "price_unit"], name="reporting_counter_key_unique"
            ),
        ]
        permissions = [("see_full_phone", "Can see full phone numbers in reports and monitoring")]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.status} {self.error_code}: {self.count}"


class CountedMessage(models.Model):
    """The state a campaign message was last counted in, so a change moves exactly one count."""

    message_id = models.BigIntegerField(primary_key=True)
    run_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField()
    status = models.CharField(max_length=16)
    error_code = models.CharField(max_length=16, blank=True, default="")
    price_unit = models.CharField(max_length=3, blank=True, default="")
    price = models.DecimalField(max_digits=10, decimal_places=5, null=True, blank=True)
    # What the row held before its last change, returned by the upsert to take off the old count.
    prev_status = models.CharField(max_length=16, blank=True, default="")
    prev_error_code = models.CharField(max_length=16, blank=True, default="")
    prev_price_unit = models.CharField(max_length=3, blank=True, default="")
    prev_price = models.DecimalField(max_digits=10, decimal_places=5, null=True, blank=True)

    def __str__(self) -> str:
        return f"message {self.message_id} counted as {self.status}"
