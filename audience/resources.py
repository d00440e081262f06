from import_export import fields, resources
from import_export.widgets import ManyToManyWidget

from audience.models import Contact, Topic
from config.spreadsheet import escape_formula


class ContactExportResource(resources.ModelResource):
    """Export of contacts; every cell that a spreadsheet would run as a formula is escaped."""

    topics = fields.Field(attribute="topics", widget=ManyToManyWidget(Topic, field="name", separator="|"))

    class Meta:
        model = Contact
        fields = (
            "id",
            "phone",
            "channel",
            "name",
            "email",
            "locale",
            "timezone",
            "attributes",
            "topics",
            "consent_status",
            "consent_updated_at",
            "last_inbound_at",
            "created_at",
        )
        export_order = fields

    def export_field(self, field, instance, **kwargs):
        return escape_formula(super().export_field(field, instance, **kwargs))
