from django.urls import re_path

from audience.api import ContactViewSet, TopicViewSet
from audience.api_imports import ImportJobViewSet, contacts_import
from config.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("contacts", ContactViewSet, basename="contact")
router.register("topics", TopicViewSet, basename="topic")
router.register("imports", ImportJobViewSet, basename="import")

urlpatterns = [
    # Before the router, whose contacts/{pk} route would otherwise take "import" for an id.
    re_path(r"^contacts/import/?$", contacts_import, name="contacts-import"),
    *router.urls,
]
