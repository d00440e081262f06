from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ReportingConfig(AppConfig):
    name = "reporting"

    def ready(self) -> None:
        from audience import signals as audience_signals
        from campaigns.services import winner
        from messaging import signals as messaging_signals
        from reporting import arm_outcomes, arms, counters

        # The test-then-winner pick reads the arms' figures, which only reporting can read.
        winner.arm_figures_provider = arms.campaign_arms
        # Each arm's clicks, conversions, revenue and cost, beside its funnel.
        arms.arm_figure_source_add(arm_outcomes.arm_outcome_figures)

        # Counts move as statuses, replies and opt-outs come; the sweep catches changes made without a signal.
        messaging_signals.message_status_changed.connect(
            counters.on_message_status_changed, dispatch_uid="reporting_counters"
        )
        messaging_signals.message_statuses_changed.connect(
            counters.on_message_statuses_changed, dispatch_uid="reporting_counters_batch"
        )
        messaging_signals.message_prices_changed.connect(
            counters.on_message_statuses_changed, dispatch_uid="reporting_counters_prices"
        )
        messaging_signals.inbound_message_received.connect(
            counters.on_inbound_message_received, dispatch_uid="reporting_counters_inbound"
        )
        audience_signals.consent_changed.connect(counters.on_consent_changed, dispatch_uid="reporting_counters_consent")
        # The function a callback's counter sync runs, as this code writes it.
        post_migrate.connect(counters.sync_function_create, sender=self, dispatch_uid="reporting_sync_function")
