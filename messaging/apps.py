from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"

    def ready(self) -> None:
        from audience.signals import contact_erasing
        from messaging.retention import contact_messages_erase

        # An erased contact's messages lose their content in the erasure's own transaction.
        contact_erasing.connect(contact_messages_erase, dispatch_uid="messaging_contact_erase")
