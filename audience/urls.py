from audience.api import ContactViewSet, TopicViewSet
from config.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("contacts", ContactViewSet, basename="contact")
router.register("topics", TopicViewSet, basename="topic")

urlpatterns = router.urls
