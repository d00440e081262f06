"""The campaigns app's REST API: segments, campaigns and customer events (campaigns/urls.py routes them)."""

from campaigns.api.campaigns import CampaignViewSet
from campaigns.api.events import EventViewSet
from campaigns.api.segments import SegmentViewSet

__all__ = ["CampaignViewSet", "EventViewSet", "SegmentViewSet"]
