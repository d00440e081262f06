from django.apps import AppConfig


class ReportingConfig(AppConfig):
    name = "reporting"

    def ready(self) -> None:
        from messaging.signals import message_status_changed
        from reporting.counters import on_message_status_changed

        # Counts move as statuses do; the periodic sweep catches changes made without the signal.
        message_status_changed.connect(on_message_status_changed, dispatch_uid="reporting_counters")
