"""Templates, senders, messages and their append-only provider events."""

from __future__ import annotations

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models.functions import Now

from audience.models import Channel, Contact


class MessageTemplate(models.Model):
    name = models.CharField(max_length=120, unique=True)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    locale = models.CharField(max_length=16, default="en")
    body = models.TextField(
        blank=True,
        help_text="Text with placeholders such as {{ name }} or {{ attributes.city }}. "
        "For WhatsApp templates, the approved text (used for previews).",
    )
    fallbacks = models.JSONField(
        default=dict, blank=True, help_text='Values used when a contact lacks one, e.g. {"name": "there"}.'
    )
    content_sid = models.CharField(
        "Twilio Content SID", max_length=34, blank=True, help_text="HX… of an approved WhatsApp template."
    )
    content_variables = models.JSONField(
        default=dict,
        blank=True,
        help_text='Numbered variables of the Content template mapped to our fields, e.g. {"1": "name"}.',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SenderKind(models.TextChoices):
    WHATSAPP = "whatsapp", "WhatsApp sender"
    LONG_CODE_US = "long_code_us", "US/CA long code"
    LONG_CODE = "long_code", "Long code (outside +1)"
    SHORT_CODE = "short_code", "Short code"
    TOLL_FREE = "toll_free", "Toll-free"


# Twilio's default messages-per-second for each kind of sender (see shared TWILIO.md).
DEFAULT_MPS = {
    SenderKind.WHATSAPP: 80,
    SenderKind.LONG_CODE_US: 1,
    SenderKind.LONG_CODE: 10,
    SenderKind.SHORT_CODE: 100,
    SenderKind.TOLL_FREE: 3,
}


class Provider(models.TextChoices):
    TWILIO = "twilio", "Twilio"
    SIMULATED = "simulated", "Simulated"


class Sender(models.Model):
    name = models.CharField(max_length=120, unique=True)
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.TWILIO)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    kind = models.CharField(max_length=16, choices=SenderKind.choices)
    from_address = models.CharField(
        max_length=64, blank=True, help_text="E.164 number (SMS) or whatsapp:+E.164; empty when a service is used."
    )
    messaging_service_sid = models.CharField(max_length=34, blank=True, help_text="MG… Messaging Service SID.")
    mps = models.PositiveIntegerField(
        "messages per second", null=True, blank=True, help_text="Empty means the default for the sender's kind."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(from_address="") | ~models.Q(messaging_service_sid=""),
                name="sender_has_an_address",
            ),
            models.CheckConstraint(
                condition=models.Q(mps__isnull=True) | models.Q(mps__gte=1), name="sender_mps_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_mps(self) -> int:
        return self.mps or DEFAULT_MPS[SenderKind(self.kind)]


class Direction(models.TextChoices):
    OUTBOUND = "outbound", "Outbound"
    INBOUND = "inbound", "Inbound"


class MessageStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    # The provider may or may not hold it, and asking failed: looked up again until the give-up.
    UNKNOWN = "unknown", "Outcome unknown"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    READ = "read", "Read"
    UNDELIVERED = "undelivered", "Undelivered"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    SKIPPED = "skipped", "Skipped"
    RECEIVED = "received", "Received"


# Statuses only move forward by rank; the final failures outrank everything but are never left.
STATUS_RANK = {
    MessageStatus.PENDING: 0,
    MessageStatus.QUEUED: 1,
    MessageStatus.SENDING: 2,
    MessageStatus.SENT: 3,
    MessageStatus.DELIVERED: 4,
    MessageStatus.READ: 5,
}
FINAL_STATUSES = frozenset(
    {
        MessageStatus.UNDELIVERED,
        MessageStatus.FAILED,
        MessageStatus.CANCELED,
        MessageStatus.SKIPPED,
        MessageStatus.RECEIVED,
        MessageStatus.READ,
    }
)
FAILURE_STATUSES = frozenset({MessageStatus.UNDELIVERED, MessageStatus.FAILED, MessageStatus.CANCELED})
# Statuses after which the provider's price no longer changes: it is fetched then, once.
PRICED_STATUSES = (
    MessageStatus.DELIVERED,
    MessageStatus.READ,
    MessageStatus.UNDELIVERED,
    MessageStatus.FAILED,
)
# Many messages never get a delivery receipt and stay "sent": their price is asked for too, later.
PRICE_DUE_STATUSES = (*PRICED_STATUSES, MessageStatus.SENT)


class Message(models.Model):
    direction = models.CharField(max_length=8, choices=Direction.choices, default=Direction.OUTBOUND)
    # Every index is written on each status change of every message (a few per send): the contact's
    # and the source's lookups use the composite indexes below, unique keys have no LIKE index.
    contact = models.ForeignKey(Contact, null=True, on_delete=models.SET_NULL, related_name="messages", db_index=False)
    sender = models.ForeignKey(Sender, null=True, blank=True, on_delete=models.PROTECT, related_name="messages")
    template = models.ForeignKey(
        MessageTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="messages"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    to_address = models.CharField(max_length=64, blank=True)
    from_address = models.CharField(max_length=64, blank=True)
    body = models.TextField(blank=True)
    body_source = models.TextField(
        blank=True,
        default="",
        db_default="",
        help_text="A free-text message's body as written, placeholders included; body holds it rendered for "
        "the contact from the first send on. Every attempt renders this, never an earlier rendering.",
    )
    content_sid = models.CharField(max_length=34, blank=True)
    content_variables = models.JSONField(default=dict, blank=True)
    render_context = models.JSONField(
        default=dict, blank=True, help_text="Values for {{ event.* }} placeholders, rendered at send time."
    )
    num_media = models.PositiveSmallIntegerField(default=0)
    media = models.JSONField(default=list, blank=True)

    status = models.CharField(max_length=16, choices=MessageStatus.choices, default=MessageStatus.PENDING)
    skip_reason = models.CharField(max_length=255, blank=True)
    provider_sid = models.CharField(max_length=64, null=True, blank=True)  # unique: Meta
    error_code = models.CharField(max_length=16, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    segments = models.PositiveSmallIntegerField(null=True, blank=True)
    encoding = models.CharField(max_length=8, blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=5, null=True, blank=True)
    price_unit = models.CharField(max_length=3, blank=True)
    # Fetching the price after the final status (messaging.pricing.fetch): tries so far, when to try
    # next, and why it was given up ("" while it is still to be fetched or once it is known).
    price_attempts = models.SmallIntegerField(default=0, db_default=0)  # no CHECK: added without a scan
    price_next_at = models.DateTimeField(null=True, blank=True)
    price_error = models.CharField(max_length=200, blank=True, default="", db_default="")

    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # unique: Meta
    request_hash = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="SHA-256 of the request that created it with an idempotency key: a replay must match it.",
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)

    # What caused the message (a campaign recipient, an event...), without messaging importing it.
    source_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.SET_NULL, db_index=False)
    source_id = models.BigIntegerField(null=True, blank=True)
    source = GenericForeignKey("source_type", "source_id")

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    sending_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)
    skipped_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="message_status_created"),
            models.Index(fields=["source_type", "source_id"], name="message_source"),
            models.Index(fields=["contact", "created_at"], name="message_contact_created"),
            models.Index(fields=["direction", "created_at"], name="message_direction_created"),
            # The messages whose price is still to be fetched: few at any time, so a small index.
            models.Index(
                fields=["updated_at"],
                name="message_price_due_or_sent",
                condition=models.Q(
                    price__isnull=True,
                    provider_sid__isnull=False,
                    direction="outbound",
                    price_error="",
                    status__in=PRICE_DUE_STATUSES,
                ),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=MessageStatus.values), name="message_status_valid"),
            models.UniqueConstraint(fields=["provider_sid"], name="message_provider_sid_unique"),
            models.UniqueConstraint(fields=["idempotency_key"], name="message_idempotency_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.provider_sid or self.pk} ({self.status})"


class ProviderCallback(models.Model):
    """One row per status callback or inbound message as received; never updated but for `message`."""

    class Kind(models.TextChoices):
        STATUS = "status", "Status callback"
        INBOUND = "inbound", "Inbound message"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    provider_sid = models.CharField(max_length=64)
    status = models.CharField(max_length=32)
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="callbacks")
    error_code = models.CharField(max_length=16, blank=True)
    payload = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    applied_at = models.DateTimeField(
        null=True, blank=True, help_text="When it moved the message; empty while the message's sid is unknown."
    )

    class Meta:
        ordering = ["received_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["provider_sid", "status"], name="message_event_sid_status_unique"),
        ]
        indexes = [
            models.Index(
                fields=["provider_sid"], name="message_event_unapplied", condition=models.Q(applied_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider_sid} {self.status}"


class ResolutionAction(models.TextChoices):
    LOOKUP = "lookup", "Look up again"
    RESEND = "resend", "Resend"
    FAIL = "fail", "Mark failed"


class MessageResolution(models.Model):
    """Who resolved a message whose outcome was unknown, how, and what came of it: its audit list."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="resolutions")
    action = models.CharField(max_length=16, choices=ResolutionAction.choices)
    actor = models.CharField(max_length=150)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.actor}"


class PriceSource(models.TextChoices):
    PROVIDER = "provider", "Provider's pricing API"
    CSV = "csv", "CSV import"
    MANUAL = "manual", "Entered by hand"


class PriceTable(models.Model):
    """The price of one message (one SMS segment) to a destination country on a channel: estimates read it."""

    country = models.CharField(max_length=2, help_text="ISO 3166 code of the destination, e.g. KE, GB, US.")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    price = models.DecimalField(max_digits=10, decimal_places=5, help_text="Per SMS segment, or per WhatsApp message.")
    currency = models.CharField(max_length=3, help_text="ISO 4217, upper case, e.g. USD.")
    source = models.CharField(max_length=16, choices=PriceSource.choices, default=PriceSource.MANUAL)
    refreshed_at = models.DateTimeField()

    class Meta:
        ordering = ["country", "channel"]
        verbose_name = "price"
        constraints = [
            models.UniqueConstraint(fields=["country", "channel"], name="price_country_channel_unique"),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="price_not_negative"),
            models.CheckConstraint(condition=models.Q(channel__in=Channel.values), name="price_channel_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.country} {self.channel}: {self.price} {self.currency}"


class Link(models.Model):
    """A URL of one message, behind its short code (``messaging.links.codes``); clicks are counted here.

    The code is derived from (message, position) and a keyed tag, so rendering a message again
    gives the same codes and this row is written with ``ON CONFLICT DO UPDATE``. Past
    ``expires_at`` the code answers a plain page and retention blanks ``url``; the counts stay.
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="links", db_index=False)
    position = models.PositiveSmallIntegerField()
    url = models.TextField(help_text="Where the code leads, with the campaign's parameters added.")
    created_at = models.DateTimeField(db_default=Now())
    expires_at = models.DateTimeField()
    clicks = models.PositiveIntegerField(default=0, db_default=0)
    first_clicked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "position"], name="link_message_position_unique")]

    def __str__(self) -> str:
        return f"link {self.position} of message {self.message_id}"


class LinkClick(models.Model):
    """One counted click (preview fetches and HEAD requests are not); ``key`` makes recording it idempotent."""

    link = models.ForeignKey(Link, on_delete=models.CASCADE, related_name="click_rows", db_index=False)
    key = models.UUIDField(unique=True)
    clicked_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["link", "clicked_at"], name="linkclick_link_at")]

    def __str__(self) -> str:
        return f"click on {self.link_id} at {self.clicked_at:%Y-%m-%d %H:%M:%S}"
