from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _periodic_tasks_sync(sender, using="default", **kwargs):
    from config.periodic import periodic_tasks_sync  # celery-beat's models load after the registry

    periodic_tasks_sync(using)


class PlatformConfig(AppConfig):
    """The platform as a whole: what no single app owns (the periodic tasks)."""

    name = "config"
    label = "platform"

    def ready(self):
        # post_migrate is sent once per app with models; celery-beat's is the one whose tables we fill.
        beat = apps.get_app_config("django_celery_beat")
        post_migrate.connect(_periodic_tasks_sync, sender=beat, dispatch_uid="platform-periodic-tasks")
