"""The campaigns app's models, one module per concern; every model and choice is importable from here."""

from campaigns.models.campaigns import (
    ACTION_WORDS,
    CAMPAIGN_SETTINGS,
    WINNER_ACTION,
    AttributionModel,
    Campaign,
    CampaignAction,
    CampaignKind,
    CampaignStatus,
    ScheduleType,
    Variant,
    WinnerMetric,
    WinnerPick,
    WinnerUndecided,
)
from campaigns.models.events import Event, EventStatus, PendingEvent
from campaigns.models.outcomes import AttributionCheck, AttributionHorizon, Conversion
from campaigns.models.runs import CampaignRun, Recipient, RecipientState, RunStatus, SkipReason
from campaigns.models.segments import Segment

__all__ = [
    "ACTION_WORDS",
    "CAMPAIGN_SETTINGS",
    "WINNER_ACTION",
    "AttributionCheck",
    "AttributionHorizon",
    "AttributionModel",
    "Campaign",
    "CampaignAction",
    "CampaignKind",
    "CampaignRun",
    "CampaignStatus",
    "Conversion",
    "Event",
    "EventStatus",
    "PendingEvent",
    "Recipient",
    "RecipientState",
    "RunStatus",
    "ScheduleType",
    "Segment",
    "SkipReason",
    "Variant",
    "WinnerMetric",
    "WinnerPick",
    "WinnerUndecided",
]
