from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self) -> None:
        from campaigns.receivers import on_inbound_message_received, on_template_saved
        from messaging.signals import inbound_message_received, template_saved

        # Inbound keywords of triggered campaigns (JOIN...); messaging keeps STOP/START/HELP.
        inbound_message_received.connect(on_inbound_message_received, dispatch_uid="campaigns_keyword_trigger")
        # A saved template is checked against the audiences of the campaigns that use it.
        template_saved.connect(on_template_saved, dispatch_uid="campaigns_template_variables")

        from audience.signals import contact_erasing
        from campaigns.erasure import contact_recipients_skip, unknown_phone_events_erase

        # An erased contact's waiting recipients are skipped in the erasure's own transaction.
        contact_erasing.connect(contact_recipients_skip, dispatch_uid="campaigns_contact_erase")
        contact_erasing.connect(unknown_phone_events_erase, dispatch_uid="campaigns_unknown_phone_events_erase")

        from campaigns.models import Recipient
        from campaigns.services.outcomes import recipient_messages_resolve
        from messaging.services.outcomes import source_resolver_register

        # A campaign message's unknown outcome is resolved with its recipient, run and campaign.
        source_resolver_register(Recipient, recipient_messages_resolve)

        from campaigns.services.attribution import recipients_link_params
        from messaging.links.rewrite import link_params_register

        # A campaign message's tracked links get the campaign's parameters (UTM...).
        link_params_register(Recipient, recipients_link_params)
