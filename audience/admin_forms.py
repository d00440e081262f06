"""The contact admin's forms and filters: the actions' topic, the topic filter, the import's options."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import ValidationError
from import_export.forms import ImportForm

from audience.choices import ConsentStatus
from audience.ingest import services as ingest_services
from audience.models import Topic
from audience.phones import country_choices


class ContactActionForm(ActionForm):
    topic = forms.ModelChoiceField(Topic.objects.all(), required=False, help_text="For 'Add to topic'.")


class TopicListFilter(admin.SimpleListFilter):
    title = "topic"
    parameter_name = "topic"

    def lookups(self, request, model_admin):
        return [(topic.pk, topic.name) for topic in Topic.objects.all()[:200]]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(contacttopic__topic_id=self.value())
        return queryset


class ContactImportForm(ImportForm):
    """django-import-export's upload form plus the engine's options; the format is detected from the file."""

    default_consent = forms.ChoiceField(
        label="Consent",
        choices=ConsentStatus.choices,
        required=False,
        widget=forms.RadioSelect,
        help_text="The consent the file's new contacts gave, for rows that give none. Required when the file "
        "has no consent column: nothing is assumed.",
    )
    default_country = forms.ChoiceField(
        label="Country of local numbers",
        choices=(),
        required=False,
        help_text="Numbers written without a country code (0722 123456) are read as this country's.",
    )
    topic = forms.CharField(required=False, help_text="Optional: a topic added to every imported contact.")
    skip_existing = forms.BooleanField(required=False, help_text="Leave contacts that already exist untouched.")

    def __init__(self, formats, resources, **kwargs):
        super().__init__(formats, resources, **kwargs)
        del self.fields["format"]
        self.fields["default_country"].choices = [("", "None: every number has its country code"), *country_choices()]
        self.fields["default_country"].initial = settings.PHONE_DEFAULT_COUNTRY
        self.fields["import_file"].help_text = "CSV (any delimiter, UTF-8 or Windows-1252), JSON array or JSON Lines."
        self.fields["import_file"].widget.attrs.update({"accept": ".csv,.txt,.json,.jsonl,.ndjson", "class": ""})

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("import_file")
        if upload is not None and upload.size > settings.IMPORT_MAX_BYTES:
            self.add_error(
                "import_file",
                f"The file is {upload.size} bytes; the limit is {settings.IMPORT_MAX_BYTES} bytes (IMPORT_MAX_BYTES).",
            )
        try:
            cleaned["options"] = ingest_services.import_options_clean(
                default_consent=cleaned.get("default_consent", ""),
                topic=cleaned.get("topic", ""),
                update_existing=not cleaned.get("skip_existing"),
                default_country=cleaned.get("default_country", ""),
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        return cleaned
