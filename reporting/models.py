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

    def __str__(self) -> str:
        return f"run {self.run_id} {self.status} {self.error_code}: {self.count}"


class CountedMessage(models.Model):
    """The state a message was last counted in, so a change moves exactly one count.

    Campaign messages (``run_id`` set) feed every per-run counter; other messages only the
    per-minute counters of the dashboard. Minutes are ``date_trunc('minute', ...)`` of the
    message's timestamps; ``deliver_seconds`` is the delivery-time bucket
    (``reporting.counter_sql.DELIVERY_BUCKET_SQL``); ``replies``, ``replies_first`` and
    ``opted_out_72h`` are what the campaign summary counts for this recipient.
    """

    message_id = models.BigIntegerField(primary_key=True)
    run_id = models.BigIntegerField(null=True)
    campaign_id = models.BigIntegerField(null=True)
    direction = models.CharField(max_length=8, default="outbound")
    status = models.CharField(max_length=16)
    error_code = models.CharField(max_length=16, blank=True, default="")
    price_unit = models.CharField(max_length=3, blank=True, default="")
    price = models.DecimalField(max_digits=10, decimal_places=5, null=True, blank=True)
    created_minute = models.DateTimeField(null=True)
    accepted_minute = models.DateTimeField(null=True)
    sent_minute = models.DateTimeField(null=True)
    delivered_minute = models.DateTimeField(null=True)
    read_minute = models.DateTimeField(null=True)
    failed_minute = models.DateTimeField(null=True)
    deliver_seconds = models.BigIntegerField(null=True)
    replies = models.IntegerField(default=0)
    replies_first = models.IntegerField(default=0)
    opted_out_72h = models.IntegerField(default=0)
    # What the row held before its last change, returned by the upsert to take off the old count.
    prev_status = models.CharField(max_length=16, blank=True, default="")
    prev_error_code = models.CharField(max_length=16, blank=True, default="")
    prev_price_unit = models.CharField(max_length=3, blank=True, default="")
    prev_price = models.DecimalField(max_digits=10, decimal_places=5, null=True, blank=True)
    prev_created_minute = models.DateTimeField(null=True)
    prev_accepted_minute = models.DateTimeField(null=True)
    prev_sent_minute = models.DateTimeField(null=True)
    prev_delivered_minute = models.DateTimeField(null=True)
    prev_read_minute = models.DateTimeField(null=True)
    prev_failed_minute = models.DateTimeField(null=True)
    prev_deliver_seconds = models.BigIntegerField(null=True)
    prev_replies = models.IntegerField(default=0)
    prev_replies_first = models.IntegerField(default=0)
    prev_opted_out_72h = models.IntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["run_id"], name="counted_message_run")]

    def __str__(self) -> str:
        return f"message {self.message_id} counted as {self.status}"


class RunMinuteCounter(models.Model):
    """A run's messages that were sent, delivered, read and failed in one minute (the timeline)."""

    run_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField()
    minute = models.DateTimeField()
    sent = models.BigIntegerField(default=0)
    delivered = models.BigIntegerField(default=0)
    read = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run_id", "minute"], name="reporting_run_minute_unique")]

    def __str__(self) -> str:
        return f"run {self.run_id} at {self.minute:%Y-%m-%d %H:%M}"


class DeliveryTimeCounter(models.Model):
    """How many of a run's messages took ``seconds`` (a bucket) from sent to delivered."""

    run_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField()
    seconds = models.BigIntegerField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run_id", "seconds"], name="reporting_delivery_time_unique")]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.seconds} s: {self.count}"


class RunEngagementCounter(models.Model):
    """Replies and opt-outs of a run's recipients (see ``CountedMessage``)."""

    run_id = models.BigIntegerField(primary_key=True)
    campaign_id = models.BigIntegerField(db_index=True)
    replies = models.BigIntegerField(default=0)
    replies_first = models.BigIntegerField(
        default=0, help_text="Replies counted once per campaign: to the contact's first message in it."
    )
    repliers = models.BigIntegerField(default=0)
    opt_outs_72h = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"run {self.run_id}: {self.replies} replies, {self.opt_outs_72h} opt-outs"


class ArmCounter(models.Model):
    """A run's campaign messages by experiment arm (reporting.arm_counters): the per-arm funnel.

    ``arm`` is the recipients' arm (a Variant id; the control group sends nothing, so has no row);
    ``rollout`` rows are a test's winner sent to the rest of the audience, kept apart from the
    comparison. ``repliers`` counts recipients who replied at least once.
    """

    run_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField(db_index=True)
    arm = models.BigIntegerField()
    rollout = models.BooleanField(default=False)
    sent = models.BigIntegerField(default=0)
    delivered = models.BigIntegerField(default=0)
    read = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    repliers = models.BigIntegerField(default=0)
    replies = models.BigIntegerField(default=0)
    opt_outs_72h = models.BigIntegerField(default=0)
    # What the provider charged for the arm's messages (prices kept positive, in the messages' unit).
    cost = models.DecimalField(max_digits=16, decimal_places=5, default=0, db_default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run_id", "arm", "rollout"], name="armcounter_once")]

    def __str__(self) -> str:
        return f"run {self.run_id} arm {self.arm}: {self.sent} sent"


class ArmConversionCounter(models.Model):
    """A run's converted recipients by experiment arm, kept by triggers on the conversion rows
    (``reporting.arm_conversions``): recipients with a conversion, their revenue, and the sum of each
    recipient's revenue squared (for the per-recipient interval). The control group has rows here."""

    run_id = models.BigIntegerField()
    arm = models.BigIntegerField()
    rollout = models.BooleanField(default=False)
    converters = models.BigIntegerField(default=0)
    revenue = models.DecimalField(max_digits=30, decimal_places=4, default=0)
    revenue_sq = models.DecimalField(max_digits=60, decimal_places=8, default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run_id", "arm", "rollout"], name="armconversioncounter_once")]

    def __str__(self) -> str:
        return f"run {self.run_id} arm {self.arm}: {self.converters} converted"


class MinuteCounter(models.Model):
    """Messages of every kind per minute: created (by direction), accepted by the provider, failed."""

    minute = models.DateTimeField(primary_key=True)
    outbound = models.BigIntegerField(default=0)
    inbound = models.BigIntegerField(default=0)
    accepted = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M}"


class ContactTotal(models.Model):
    """Deltas of the contact totals, one row per writing statement (database triggers on audience_contact).

    Append-only, so concurrent writers never wait on each other; ``reporting.contact_totals`` sums
    them and ``contact_totals_compact`` folds them into one row.
    """

    contacts = models.BigIntegerField(default=0)
    opted_out = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.contacts} contacts, {self.opted_out} opted out"


from reporting.alerting.models import AlertNotice, AlertRule, AlertState  # noqa: E402, F401  (alerting's tables)
