import json

from django.core.exceptions import ValidationError
from import_export import fields, resources
from import_export.widgets import ManyToManyWidget

from audience.ingest.validate import infer_scalar
from audience.models import Contact, Topic
from audience.phones import InvalidPhone, normalize_phone
from config import privacy
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

    PERSONAL = {"phone": "phone", "name": "name", "email": "email", "attributes": "text"}

    def __init__(self, *, full: bool = False, **kwargs):
        """``full``: whether the exporting user sees personal data whole (config.privacy); masked by default."""
        super().__init__(**kwargs)
        self.full = full

    def export_field(self, field, instance, **kwargs):
        value = super().export_field(field, instance, **kwargs)
        if field.attribute in self.PERSONAL:
            value = privacy.shown(self.PERSONAL[field.attribute], value, self.full)
        return escape_formula(value)


class ContactImportResource(resources.ModelResource):
    """The columns an import file may have, for the admin import page.

    The admin, the API and the command all hand files to the ingest engine
    (audience.ingest), not to this resource's row-by-row import. It still
    imports correctly on its own (phones normalised, extra columns kept as
    typed attributes): the benchmark uses it as django-import-export's baseline.
    """

    topics = fields.Field(attribute="topics", widget=ManyToManyWidget(Topic, field="name", separator="|"))

    class Meta:
        model = Contact
        import_id_fields = ("phone",)
        fields = ("phone", "name", "email", "channel", "locale", "timezone", "attributes", "topics", "consent_status")
        skip_unchanged = True

    def before_import_row(self, row, **kwargs):
        row["phone"] = self.clean_phone(row.get("phone"))
        extra = {key: value for key, value in row.items() if key not in self.fields and value not in (None, "")}
        if extra:
            row["attributes"] = json.dumps({key: infer_scalar(str(value)) for key, value in extra.items()})

    def clean_phone(self, value) -> str:
        try:
            return normalize_phone(value)
        except InvalidPhone as exc:
            raise ValidationError({"phone": str(exc)}) from None
