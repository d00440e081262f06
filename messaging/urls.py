from config.routers import OptionalSlashRouter
from messaging.api import SenderViewSet, TemplateViewSet
from messaging.api_messages import MessageViewSet

router = OptionalSlashRouter()
router.register("templates", TemplateViewSet, basename="template")
router.register("senders", SenderViewSet, basename="sender")
router.register("messages", MessageViewSet, basename="message")

urlpatterns = router.urls
