from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AudienceConfig(AppConfig):
    name = "audience"

    def ready(self) -> None:
        from config.roles import sync_role_permissions

        # Keeps the two roles' model permissions complete as later apps add models.
        post_migrate.connect(sync_role_permissions, dispatch_uid="sync_role_permissions")
