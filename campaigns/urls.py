from campaigns.api import CampaignViewSet, SegmentViewSet
from config.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("segments", SegmentViewSet, basename="segment")
router.register("campaigns", CampaignViewSet, basename="campaign")

urlpatterns = router.urls
