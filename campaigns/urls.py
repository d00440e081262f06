from django.urls import re_path

from campaigns.api import CampaignViewSet, EventViewSet, SegmentViewSet
from campaigns.api.history import ContactEventHistoryView
from config.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("segments", SegmentViewSet, basename="segment")
router.register("campaigns", CampaignViewSet, basename="campaign")
router.register("events", EventViewSet, basename="event")

urlpatterns = [
    re_path(r"^contacts/(?P<contact_id>\d+)/events/?$", ContactEventHistoryView.as_view(), name="contact-events"),
    *router.urls,
]
