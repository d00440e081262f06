from __future__ import annotations

import zoneinfo

from django.contrib.postgres.indexes import HashIndex
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from audience.choices import Channel, ConsentEventKind, ConsentSource, ConsentStatus, RowProblemLevel

E164_VALIDATOR = RegexValidator(r"^\+[1-9]\d{6,14}$", "Enter a phone number in E.164 form, e.g. +14155550100.")
TOPIC_NAME_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,63}$", "Topic names are lower-case letters, digits, '-' and '_', up to 64 characters."
)


def validate_timezone(value: str) -> None:
    if not value:
        return
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not an IANA time zone such as Africa/Nairobi.", code="timezone") from None


class Topic(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[TOPIC_NAME_VALIDATOR])
    description = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Contact(models.Model):
    phone = models.CharField(max_length=16, unique=True, validators=[E164_VALIDATOR])
    channel = models.CharField("preferred channel", max_length=16, choices=Channel.choices, default=Channel.SMS)
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    locale = models.CharField(max_length=16, blank=True, default="en")
    timezone = models.CharField(
        max_length=64, blank=True, validators=[validate_timezone], help_text="IANA name; empty means DEFAULT_TIMEZONE."
    )
    attributes = models.JSONField(default=dict, blank=True)
    topics = models.ManyToManyField(Topic, through="ContactTopic", related_name="contacts", blank=True)
    consent_status = models.CharField(max_length=16, choices=ConsentStatus.choices, default=ConsentStatus.OPTED_IN)
    consent_updated_at = models.DateTimeField(null=True, blank=True)
    opted_in_at = models.DateTimeField(null=True, blank=True)
    opted_out_at = models.DateTimeField(null=True, blank=True)
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The one permission of config.privacy's masking policy (Staff hold it, Analysts do not).
        permissions = [("see_full_phone", "Can see full phone numbers, names and e-mail addresses")]
        # No GIN index on attributes: it cost about 5 s per million imported contacts, while
        # segments scan the table anyway (a count over 1M contacts takes about a second).
        # Opted-out contacts only: nearly every imported contact is opted in, and an index over a
        # two-value column cost about 6 µs a row on import while no query reads opted-in rows through it.
        indexes = [
            models.Index(
                fields=["-created_at"],
                name="contact_opted_out_idx",
                condition=models.Q(consent_status=ConsentStatus.OPTED_OUT),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(consent_status__in=ConsentStatus.values), name="contact_consent_status_valid"
            ),
            models.CheckConstraint(condition=models.Q(channel__in=Channel.values), name="contact_channel_valid"),
        ]

    def __str__(self) -> str:
        # Shown in admin titles, lists of other models and the admin's history (LogEntry.object_repr,
        # stored): no personal data, which the admin shows in fields masked for those without the right.
        return f"contact #{self.pk}"

    @property
    def is_opted_in(self) -> bool:
        return self.consent_status == ConsentStatus.OPTED_IN


class ContactTopic(models.Model):
    # No database FK on contact: the check locks each contact row (FOR KEY SHARE) and was a large
    # part of a 1M-row import. Rows are only written from ids selected in the same statement, and
    # deleting a contact removes its links through Django's CASCADE.
    # The same for topic: every link checked and share-locked its topic row, and two writer sessions
    # sharing a handful of topic rows made that a multixact per check. Links are written from topic ids
    # selected in the same statement; deleting a topic removes its links through Django's CASCADE.
    # No single-column indexes either: contact_topic_unique leads with contact and
    # contact_topic_by_topic with topic, and each extra index slowed every import.
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, db_constraint=False, db_index=False)
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, db_constraint=False, db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact", "topic"], name="contact_topic_unique")]
        indexes = [models.Index(fields=["topic", "contact"], name="contact_topic_by_topic")]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.topic_id}"


class ConsentEvent(models.Model):
    """Append-only audit of every consent change, chained by hashes (audience.consent_chain writes it)."""

    # No database FK (see ContactTopic.contact): an import writes a million of these in one statement.
    contact = models.ForeignKey(
        Contact, null=True, on_delete=models.SET_NULL, related_name="consent_events", db_constraint=False
    )
    phone_hash = models.CharField(max_length=64)
    # A database default: the import writes events with SQL, and they are all consent changes.
    kind = models.CharField(max_length=24, choices=ConsentEventKind.choices, db_default=ConsentEventKind.CHANGE)
    from_status = models.CharField(max_length=16, blank=True, choices=ConsentStatus.choices)
    to_status = models.CharField(
        max_length=16, blank=True, choices=ConsentStatus.choices, help_text="Empty for an event that is not a change."
    )
    source = models.CharField(max_length=16, blank=True, choices=ConsentSource.choices)
    actor = models.CharField(max_length=150, blank=True, help_text="User name, or the system part that acted.")
    evidence = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The audit chain (audience.consent_chain): NOT NULL, so that no writer can leave an event out of it.
    seq = models.BigIntegerField("position", unique=True, editable=False, help_text="Position in the audit chain.")
    personal_digest = models.BinaryField(
        max_length=32, editable=False, help_text="SHA-256 of contact, phone hash and evidence as written."
    )
    chain_hash = models.BinaryField(
        max_length=32, editable=False, help_text="SHA-256 of the previous event's chain hash and this entry."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        # A contact's history is read through contact_id; the hash finds only what has no contact
        # (an erased person's events, a STOP from an unknown phone), so only those rows are indexed,
        # by equality: an import's million events with a contact skip the index (it was a quarter
        # of their cost), and a hash index stores 4-byte codes instead of 64-character keys.
        indexes = [
            HashIndex(
                fields=["phone_hash"], name="consentevent_orphan_phone_hash", condition=models.Q(contact__isnull=True)
            )
        ]

    def __str__(self) -> str:
        if self.kind != ConsentEventKind.CHANGE:
            return f"{self.get_kind_display()} ({self.source})" if self.source else self.get_kind_display()
        source = ConsentSource(self.source).label if self.source in ConsentSource.values else self.source
        to = ConsentStatus(self.to_status).label if self.to_status in ConsentStatus.values else self.to_status
        if not self.from_status:
            return f"{to} ({source})"
        was = ConsentStatus(self.from_status).label if self.from_status in ConsentStatus.values else self.from_status
        return f"{was} → {to} ({source})"


class Suppression(models.Model):
    """A phone that must stay opted out even after its contact was deleted."""

    phone_hash = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=255)
    source = models.CharField(max_length=16, choices=ConsentSource.choices)
    evidence = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.phone_hash[:12]}… ({self.reason})"


class ImportStatus(models.TextChoices):
    PENDING = "pending", "Waiting for confirmation"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ImportSource(models.TextChoices):
    ADMIN = "admin", "Admin"
    API = "api", "API"
    COMMAND = "command", "Command"


class ImportJob(models.Model):
    """One run of the ingest engine over one file, whichever door it came in by.

    ``committed_batches`` lists the phone-hash buckets whose upsert transaction
    committed; a re-run skips them, and the upsert is idempotent anyway.
    """

    status = models.CharField(max_length=16, choices=ImportStatus.choices, default=ImportStatus.PENDING)
    source = models.CharField(max_length=16, choices=ImportSource.choices)
    created_by = models.CharField(max_length=150, blank=True)
    file_path = models.CharField(max_length=500, help_text="Relative to MEDIA_ROOT, or absolute for the command.")
    file_name = models.CharField(max_length=255)
    file_size = models.BigIntegerField(default=0)
    file_format = models.CharField(max_length=8, blank=True, help_text="csv, json or jsonl")
    options = models.JSONField(default=dict, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Detected encoding, delimiter, columns.")
    stage = models.CharField(max_length=32, blank=True)
    progress = models.FloatField(default=0.0, help_text="Percent done, 0 to 100.")
    total_rows = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    invalid_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    warning_count = models.PositiveIntegerField(default=0)
    batch_count = models.PositiveSmallIntegerField(default=1)
    committed_batches = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, help_text="Why the whole file failed, if it did.")
    attempts = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=ImportStatus.values), name="importjob_status_valid"),
            models.CheckConstraint(
                condition=models.Q(progress__gte=0) & models.Q(progress__lte=100), name="importjob_progress_range"
            ),
        ]

    def __str__(self) -> str:
        return f"Import #{self.pk} {self.file_name} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (ImportStatus.SUCCEEDED, ImportStatus.FAILED)

    @property
    def outcome(self) -> str:
        """The status as staff read it: a job that left rows out says so ("Succeeded, 35 rows left out")."""
        label = self.get_status_display()
        if self.status == ImportStatus.SUCCEEDED and self.invalid_count:
            rows = "row" if self.invalid_count == 1 else "rows"
            return f"{label}, {self.invalid_count} {rows} left out"
        return label


class ImportRowError(models.Model):
    """One problem found in one row of an import file (an error drops the row, a warning keeps it)."""

    Level = RowProblemLevel

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="row_errors")
    line = models.PositiveIntegerField(help_text="1-based line in the file; the CSV header is line 1.")
    column = models.CharField(max_length=100, blank=True)
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.ERROR)
    reason = models.TextField()
    value = models.TextField(blank=True, help_text="The offending cell, cut to 200 characters.")

    class Meta:
        ordering = ["job", "line", "id"]
        indexes = [models.Index(fields=["job", "line"], name="importrowerror_job_line")]

    def __str__(self) -> str:
        return f"line {self.line} {self.column}: {self.reason}"
