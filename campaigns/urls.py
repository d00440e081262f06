from campaigns.api import CampaignViewSet, EventViewSet, SegmentViewSet
from config.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("segments", SegmentViewSet, basename="segment")
router.register("campaigns", CampaignViewSet, basename="campaign")
router.register("events", EventViewSet, basename="event")

urlpatterns = router.urls
