"""Campaigns: their kinds and settings, the audit list of what staff did, and their variants."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from campaigns.models.segments import Segment


class CampaignKind(models.TextChoices):
    ONE_OFF = "one_off", "One-off"
    RECURRING = "recurring", "Recurring"
    TRIGGERED = "triggered", "Triggered"


class ScheduleType(models.TextChoices):
    NOW = "now", "Send now"
    ONCE = "once", "Once, at a date and time"
    CRON = "cron", "Recurring (cron)"


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SCHEDULED = "scheduled", "Scheduled"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"


class AttributionModel(models.TextChoices):
    LAST_MESSAGE = "last_message", "Last message received"
    LAST_CLICK = "last_click", "Last click"


class WinnerMetric(models.TextChoices):
    DELIVERED = "delivered", "Delivery rate"
    REPLIES = "replies", "Reply rate"
    CLICKS = "clicks", "Click rate"
    CONVERSIONS = "conversions", "Conversion rate"
    REVENUE = "revenue", "Revenue per recipient"


class WinnerPick(models.TextChoices):
    AUTO = "auto", "Automatically, after the wait"
    MANUAL = "manual", "By hand (staff)"


class WinnerUndecided(models.TextChoices):
    """What an automatic pick does when no arm leads significantly (95 %) after the wait."""

    LEADER = "leader", "Send the leader anyway"
    WAIT = "wait", "Keep waiting, up to the longest wait, then send the leader"
    FIRST = "first", "Send the first variant"


class Campaign(models.Model):
    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=CampaignKind.choices, default=CampaignKind.ONE_OFF)
    template = models.ForeignKey("messaging.MessageTemplate", on_delete=models.PROTECT, related_name="campaigns")
    sender = models.ForeignKey("messaging.Sender", on_delete=models.PROTECT, related_name="campaigns")
    segment = models.ForeignKey(
        Segment,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="campaigns",
        help_text="Empty means every opted-in contact.",
    )
    topic = models.ForeignKey(
        "audience.Topic",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="campaigns",
        help_text="Only contacts subscribed to this topic.",
    )
    mps = models.PositiveIntegerField(
        "messages per second", null=True, blank=True, help_text="Empty means the sender's; never above it."
    )
    quiet_start = models.TimeField(null=True, blank=True, help_text="Contact-local time when quiet hours begin.")
    quiet_end = models.TimeField(null=True, blank=True, help_text="Contact-local time when quiet hours end.")
    frequency_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many campaign messages per contact in the window."
    )
    frequency_window = models.DurationField(null=True, blank=True, help_text="Rolling window of the cap, e.g. 1 day.")
    validity = models.DurationField(
        null=True, blank=True, help_text="A message that would go out later than this after launch is not sent."
    )
    schedule_type = models.CharField(max_length=8, choices=ScheduleType.choices, default=ScheduleType.NOW)
    send_at = models.DateTimeField(null=True, blank=True)
    cron = models.CharField(max_length=100, blank=True, help_text='Five fields, e.g. "0 9 * * mon-fri".')
    cron_timezone = models.CharField(max_length=64, blank=True, default="UTC")
    # Triggered campaigns (campaigns.services.events): an event by name, or an inbound keyword.
    trigger_event = models.CharField(
        max_length=100, blank=True, help_text="Event name that fires this triggered campaign, e.g. order_shipped."
    )
    trigger_keyword = models.CharField(
        max_length=32,
        blank=True,
        help_text="Inbound keyword (the whole message, any case) that fires it, e.g. JOIN; "
        "the contact is also added to the campaign's topic.",
    )
    trigger_conditions = models.JSONField(
        default=list,
        blank=True,
        help_text="Conditions on the event's properties, all must hold: "
        '[{"property": "total", "op": "gte", "value": 50}].',
    )
    trigger_contact_rule = models.JSONField(
        null=True,
        blank=True,
        help_text="Conditions on the contact, in the segment rule language (a JSON rule tree or a query string).",
    )
    # Outcomes (docs/outcomes.md): parameters added to its tracked links, and the goal its conversions meet.
    link_params = models.JSONField(
        default=dict,
        blank=True,
        help_text='Query parameters added to its tracked links unless a link has them, e.g. {"utm_source": "sms"}.',
    )
    goal_event = models.CharField(
        max_length=100, blank=True, help_text="Event name that counts as a conversion, e.g. order_placed."
    )
    goal_conditions = models.JSONField(
        default=list, blank=True, help_text="Conditions on the goal event's properties, as for trigger conditions."
    )
    goal_window = models.DurationField(
        default=timedelta(days=3), help_text="How long after the message (or the click) an event still counts."
    )
    goal_model = models.CharField(
        max_length=16,
        choices=AttributionModel.choices,
        default=AttributionModel.LAST_MESSAGE,
        help_text="Which touch earns the conversion: the last message received, or the last click.",
    )
    # Experiments (campaigns.services.arms): a share of the audience that gets nothing but is measured.
    control_share = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(50)],
        help_text="Percent of the audience held out as a control group (0-50); measured, never sent.",
    )
    # Test then send the winner (campaigns.services.winner): one-off campaigns with variants.
    winner_test_share = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Percent of the audience that gets the test first (5-50); empty sends every arm at once.",
    )
    winner_wait = models.DurationField(
        null=True, blank=True, help_text="How long after the launch the winner is picked."
    )
    winner_metric = models.CharField(max_length=16, choices=WinnerMetric.choices, blank=True)
    winner_pick = models.CharField(max_length=8, choices=WinnerPick.choices, default=WinnerPick.AUTO)
    winner_undecided = models.CharField(
        max_length=8,
        choices=WinnerUndecided.choices,
        default=WinnerUndecided.LEADER,
        help_text="When, after the wait, no arm leads significantly (95 % confidence) on the metric.",
    )
    winner_max_wait = models.DurationField(
        null=True, blank=True, help_text="Keep waiting: the longest wait after the launch; then the leader is sent."
    )
    winner_variant = models.ForeignKey(
        "Variant", null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    winner_picked_at = models.DateTimeField(null=True, blank=True, editable=False)
    status = models.CharField(max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="campaign"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=CampaignStatus.values), name="campaign_status_valid"),
            models.CheckConstraint(
                condition=(models.Q(quiet_start__isnull=True) & models.Q(quiet_end__isnull=True))
                | (models.Q(quiet_start__isnull=False) & models.Q(quiet_end__isnull=False)),
                name="campaign_quiet_hours_both_or_none",
            ),
            models.CheckConstraint(
                condition=models.Q(frequency_cap__isnull=True) | models.Q(frequency_window__isnull=False),
                name="campaign_cap_has_window",
            ),
            # One live campaign per keyword: two would answer one JOIN twice.
            models.CheckConstraint(
                condition=models.Q(control_share__lte=50),
                name="campaign_control_share_range",
                violation_error_message="the control group is 0 to 50 % of the audience",
            ),
            models.CheckConstraint(
                condition=models.Q(winner_test_share__isnull=True)
                | models.Q(winner_test_share__gte=5, winner_test_share__lte=50),
                name="campaign_winner_test_share_range",
                violation_error_message="the test goes to 5 to 50 % of the audience",
            ),
            models.UniqueConstraint(
                fields=["trigger_keyword"],
                condition=~models.Q(trigger_keyword="")
                & ~models.Q(status__in=[CampaignStatus.COMPLETED, CampaignStatus.CANCELLED, CampaignStatus.FAILED]),
                name="campaign_keyword_unique_while_live",
            ),
        ]
        indexes = [
            models.Index(
                fields=["trigger_event"], name="campaign_trigger_event", condition=~models.Q(trigger_event="")
            ),
        ]

    def __str__(self) -> str:
        return self.name


# The settings staff edit, besides the name: one list for the admin form, the API and duplicates.
CAMPAIGN_SETTINGS = (
    "kind",
    "template",
    "sender",
    "segment",
    "topic",
    "mps",
    "quiet_start",
    "quiet_end",
    "frequency_cap",
    "frequency_window",
    "validity",
    "schedule_type",
    "send_at",
    "cron",
    "cron_timezone",
    "trigger_event",
    "trigger_keyword",
    "trigger_conditions",
    "trigger_contact_rule",
    "link_params",
    "goal_event",
    "goal_conditions",
    "goal_window",
    "goal_model",
    "control_share",
    "winner_test_share",
    "winner_wait",
    "winner_metric",
    "winner_pick",
    "winner_undecided",
    "winner_max_wait",
)


# What each audit action reads as; an action not named here reads as its words.
ACTION_WORDS = {
    "create": "Created",
    "edit": "Edited",
    "schedule": "Scheduled",
    "launch": "Launched",
    "pause": "Paused",
    "resume": "Resumed",
    "cancel": "Cancelled",
    "complete": "Completed",
    "resend": "Resent unknown outcomes",
    "mark_failed": "Marked unknown outcomes failed",
    "lookup": "Asked the provider about unknown outcomes",
    "test_send": "Sent a test",
    "winner": "Picked the test's winner",
}
WINNER_ACTION = "winner"  # CampaignAction.action of a test's winner pick


class CampaignAction(models.Model):
    """Who did what to a campaign, and when: its audit list."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=32)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    actor = models.CharField(max_length=150, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action_words} by {self.actor or 'the platform'}"

    @property
    def action_words(self) -> str:
        return ACTION_WORDS.get(self.action, self.action.replace("_", " ").capitalize())


class Variant(models.Model):
    """One message variant (arm) of a campaign's experiment; recipients store its id as their arm.

    A campaign has none (one template) or 2-5 (campaigns.services.arms validates), each drawn
    with its weight's share of the audience that is not in the control group.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="variants")
    label = models.CharField(max_length=40)
    template = models.ForeignKey("messaging.MessageTemplate", on_delete=models.PROTECT, related_name="variants")
    weight = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(100)], help_text="Relative share, 1-100."
    )

    class Meta:
        ordering = ["campaign", "id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "label"], name="variant_label_unique"),
            models.CheckConstraint(
                condition=models.Q(weight__gte=1, weight__lte=100),
                name="variant_weight_range",
                violation_error_message="the weight must be a whole number from 1 to 100",
            ),
        ]

    def __str__(self) -> str:
        return self.label
