from config.routers import OptionalSlashRouter
from messaging.api import MessageViewSet, SenderViewSet, TemplateViewSet

router = OptionalSlashRouter()
router.register("templates", TemplateViewSet, basename="template")
router.register("senders", SenderViewSet, basename="sender")
router.register("messages", MessageViewSet, basename="message")

urlpatterns = router.urls
