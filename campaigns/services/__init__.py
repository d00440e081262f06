"""Writes for campaigns: segments, and the campaign lifecycle (schedules, launches, dry runs)."""

from campaigns.services.copies import campaign_duplicate, campaign_test_send
from campaigns.services.dry_run import campaign_dry_run
from campaigns.services.lifecycle import (
    CampaignError,
    campaign_cancel,
    campaign_create,
    campaign_delete,
    campaign_launch,
    campaign_pause,
    campaign_resume,
    campaign_schedule,
    campaign_update,
    campaign_validate,
    run_complete,
)
from campaigns.services.schedules import campaign_sync_schedule
from campaigns.services.segments import (
    SegmentError,
    segment_create,
    segment_definition_clean,
    segment_delete,
    segment_update,
)

__all__ = [
    "CampaignError",
    "SegmentError",
    "campaign_cancel",
    "campaign_create",
    "campaign_duplicate",
    "campaign_test_send",
    "campaign_delete",
    "campaign_dry_run",
    "campaign_launch",
    "campaign_pause",
    "campaign_resume",
    "campaign_schedule",
    "campaign_sync_schedule",
    "campaign_update",
    "campaign_validate",
    "run_complete",
    "segment_create",
    "segment_definition_clean",
    "segment_delete",
    "segment_update",
]
