"""REST API for contacts, their consent and topics (/api/v1/contacts/, /api/v1/topics/) and imports."""

from __future__ import annotations

import django_filters
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action, api_view, parser_classes
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.filters import SearchFilter
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.reverse import reverse

from audience import selectors, services
from audience.ingest import selectors as ingest_selectors
from audience.ingest import services as ingest_services
from audience.models import (
    Channel,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    Contact,
    ImportJob,
    ImportRowError,
    ImportSource,
    Topic,
)
from audience.phones import InvalidPhone, normalize_phone
from config import privacy
from config.api import JSONField, UtcIsoDateTimeFilter, raise_as_drf
from config.spreadsheet import csv_download

IMPORT_ERRORS_SHOWN = 100
# Room for the multipart boundaries and the other fields around the file in a Content-Length.
MULTIPART_OVERHEAD = 64 * 1024


class TopicSerializer(serializers.ModelSerializer):
    class Meta:
        model = Topic
        fields = ["id", "name", "description", "created_at"]
        read_only_fields = ["id", "created_at"]


class ContactSerializer(serializers.ModelSerializer):
    topics = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Topic.objects.all(),
        many=True,
        required=False,
        help_text="Topic names; on update the list replaces the contact's topics.",
    )
    phone = serializers.CharField(help_text="Any common spelling; stored in E.164.")
    timezone = serializers.CharField(required=False, allow_blank=True)
    attributes = JSONField(required=False, help_text="Merged key by key on update; null removes a key.")

    class Meta:
        model = Contact
        fields = [
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
            "opted_in_at",
            "opted_out_at",
            "last_inbound_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "consent_updated_at",
            "opted_in_at",
            "opted_out_at",
            "last_inbound_at",
            "created_at",
            "updated_at",
        ]

    def validate_attributes(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("attributes must be a JSON object")
        return value

    def to_representation(self, instance):
        data = super().to_representation(instance)
        return data if privacy.request_sees_full(self.context.get("request")) else privacy.contact_masked(data)

    def create(self, validated_data):
        topics = validated_data.pop("topics", [])
        try:
            return services.contact_create(
                **validated_data,
                topics=topics,
                source=ConsentSource.API,
                actor=self.context["request"].user,
                evidence={"door": "api"},
            )
        except DjangoValidationError as exc:
            raise_as_drf(exc)

    def update(self, instance, validated_data):
        topics = validated_data.pop("topics", None)
        if "consent_status" in validated_data and validated_data["consent_status"] != instance.consent_status:
            raise ValidationError({"consent_status": ["change consent with POST /api/v1/contacts/{id}/consent"]})
        validated_data.pop("consent_status", None)
        try:
            return services.contact_update(instance, data=validated_data, topics=topics)
        except DjangoValidationError as exc:
            raise_as_drf(exc)


class ConsentEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = ConsentEvent
        fields = ["id", "seq", "kind", "from_status", "to_status", "source", "actor", "evidence", "created_at"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["evidence"] = privacy.shown(
            "json", data["evidence"], privacy.request_sees_full(self.context.get("request"))
        )
        return data


class ConsentChangeSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=ConsentStatus.choices)
    document = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="A reference to the signed form or document of the consent. Required to opt in a contact whose "
        "opt-out came from a STOP keyword, the provider (the carrier reported an opt-out) or the suppression list.",
    )
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Why the change is made, in your words. Required with `document` in the same cases.",
    )
    evidence = JSONField(
        required=False, help_text="Anything else that proves the change (a ticket, a call record); kept as given."
    )

    def validate_evidence(self, value):
        if value is not None and not isinstance(value, dict):
            raise serializers.ValidationError("evidence must be a JSON object")
        return value

    def evidence_given(self) -> dict:
        """The evidence as given, with ``document`` and ``reason`` in it when they were sent."""
        data = self.validated_data
        evidence = dict(data.get("evidence") or {})
        for name in ("document", "reason"):
            if name in data:
                evidence[name] = data[name]
        return evidence


class ContactFilter(django_filters.FilterSet):
    consent_status = django_filters.ChoiceFilter(choices=ConsentStatus.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    locale = django_filters.CharFilter()
    topic = django_filters.CharFilter(field_name="topics__name", label="Topic name")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    phone = django_filters.CharFilter(method="filter_phone")

    class Meta:
        model = Contact
        fields = ["consent_status", "channel", "locale", "topic", "created_after", "created_before", "phone"]

    def filter_phone(self, queryset, name, value):
        try:
            return queryset.filter(phone=normalize_phone(value))
        except InvalidPhone as exc:
            raise ValidationError({"phone": [str(exc)]}) from None


class ContactPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 500


class ContactViewSet(viewsets.ModelViewSet):
    serializer_class = ContactSerializer
    filterset_class = ContactFilter
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend, SearchFilter]
    search_fields = ["phone", "name", "email"]
    pagination_class = ContactPagination
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        queryset = selectors.contact_list()
        if "topic" in self.request.query_params:
            queryset = queryset.distinct()
        return queryset

    def perform_destroy(self, instance):
        services.contact_delete(instance, actor=self.request.user)

    @extend_schema(request=ConsentChangeSerializer, responses=ContactSerializer)
    @action(detail=True, methods=["post"])
    def consent(self, request, pk=None):
        """Opt a contact in or out, writing an audit row with the evidence given.

        Opting in a contact whose opt-out came from a STOP keyword, the provider or the
        suppression list needs `document` and `reason` (400 naming each one missing); it
        lifts the phone's suppression entry, which the audit row records.
        """
        contact = self.get_object()
        payload = ConsentChangeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            services.consent_change(
                contact,
                to_status=payload.validated_data["status"],
                source=ConsentSource.API,
                actor=request.user,
                evidence=payload.evidence_given(),
            )
        except DjangoValidationError as exc:
            raise_as_drf(exc)
        contact.refresh_from_db()
        return Response(ContactSerializer(contact, context=self.get_serializer_context()).data)

    @extend_schema(responses=ConsentEventSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="consent-history", pagination_class=None, filter_backends=[])
    def consent_history(self, request, pk=None):
        contact = self.get_object()
        events = selectors.contact_consent_history(contact)[:500]
        return Response(ConsentEventSerializer(events, many=True, context=self.get_serializer_context()).data)


class TopicViewSet(viewsets.ModelViewSet):
    serializer_class = TopicSerializer
    queryset = Topic.objects.all()
    pagination_class = None
    filter_backends = []
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]


# --- imports -----------------------------------------------------------------------------------


class ImportRowErrorSerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportRowError
        fields = ["line", "column", "level", "reason", "value"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        full = privacy.request_sees_full(self.context.get("request"))
        data["value"] = ingest_selectors.problem_value_shown(data["column"], data["value"], full)
        return data


class ImportJobSerializer(serializers.ModelSerializer):
    outcome = serializers.CharField(
        read_only=True, help_text='The status as people read it: "Succeeded, 35 rows left out" when rows had errors.'
    )
    errors = serializers.SerializerMethodField(help_text=f"The first {IMPORT_ERRORS_SHOWN} row problems, by line.")
    errors_csv = serializers.SerializerMethodField(help_text="The whole error report as CSV.")

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "status",
            "outcome",
            "stage",
            "progress",
            "source",
            "created_by",
            "file_name",
            "file_size",
            "file_format",
            "options",
            "details",
            "total_rows",
            "created_count",
            "updated_count",
            "unchanged_count",
            "skipped_count",
            "invalid_count",
            "duplicate_count",
            "warning_count",
            "batch_count",
            "committed_batches",
            "error",
            "errors",
            "errors_csv",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ImportRowErrorSerializer(many=True))
    def get_errors(self, job: ImportJob):
        rows = ingest_selectors.import_job_errors(job)[:IMPORT_ERRORS_SHOWN]
        return ImportRowErrorSerializer(rows, many=True, context=self.context).data

    def get_errors_csv(self, job: ImportJob) -> str:
        request = self.context.get("request")
        path = reverse("import-errors", args=[job.pk])
        return request.build_absolute_uri(path) if request else path


@extend_schema_field(OpenApiTypes.BINARY)
class UploadField(serializers.FileField):
    """A file sent in a multipart request: binary in the schema (a FileField reads as a URI there)."""


class ImportRequestSerializer(serializers.Serializer):
    file = UploadField(help_text="CSV (any common delimiter), a JSON array of objects, or JSON Lines.")
    default_consent = serializers.ChoiceField(
        choices=ConsentStatus.choices,
        required=False,
        help_text="The consent of new contacts whose row gives none. Required when the file is a CSV without a "
        "consent column (400 naming it otherwise): nothing is assumed. In a JSON file, a new contact's record "
        "without a consent is an error on its row when this is not given.",
    )
    default_country = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=2,
        help_text="The country (ISO 3166 code, e.g. KE) of phone numbers written without a country code "
        "(0722 123456). Default: the PHONE_DEFAULT_COUNTRY setting; blank for none.",
    )
    topic = serializers.CharField(
        required=False, allow_blank=True, help_text="A topic added to every imported contact."
    )
    skip_existing = serializers.BooleanField(
        required=False, default=False, help_text="Leave contacts that already exist untouched."
    )


class ImportJobPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50


class ImportJobViewSet(viewsets.ReadOnlyModelViewSet):
    """Import jobs: progress, counts and row problems. Analysts may read; imports are started by Staff."""

    serializer_class = ImportJobSerializer
    pagination_class = ImportJobPagination
    filter_backends = []

    def get_queryset(self):
        return ingest_selectors.import_job_list()

    @extend_schema(responses={(200, "text/csv"): str})
    @action(detail=True, methods=["get"], url_path="errors", url_name="errors")
    def errors_csv(self, request, pk=None):
        """The error report: line, column, level, reason, value; cells escaped against spreadsheet formulas."""
        job = self.get_object()
        rows = ingest_selectors.import_job_error_rows(job, full=privacy.request_sees_full(request))
        return csv_download(rows, f"import-{job.pk}-errors.csv")


class ImportTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "file_too_large"


def import_size_check(size: int | None) -> None:
    """Refuse an import file over IMPORT_MAX_BYTES with a 413 that names the limit."""
    limit = settings.IMPORT_MAX_BYTES
    if size is not None and size > limit:
        raise ImportTooLarge(f"The import file is {size} bytes; the limit is {limit} bytes (IMPORT_MAX_BYTES).")


@extend_schema(
    request={"multipart/form-data": ImportRequestSerializer},
    responses={202: ImportJobSerializer, 413: OpenApiResponse(description="The file is over IMPORT_MAX_BYTES.")},
)
@api_view(["POST"])
@parser_classes([MultiPartParser, FormParser])
def contacts_import(request):
    """Start an import: the file is saved and queued; answers 202 with the job to poll.

    Contacts are matched by normalised phone; the last row of a phone wins. A row's
    consent applies to a new contact; an existing contact can be opted out by a file
    but never back in (the row's other fields still apply, and the job reports a
    warning): they opt in by replying START, or through the consent endpoint.
    """
    try:  # before the body is read: a client that says its upload is too big is stopped at once
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    import_size_check(declared - MULTIPART_OVERHEAD)
    payload = ImportRequestSerializer(data=request.data)
    payload.is_valid(raise_exception=True)
    data = payload.validated_data
    import_size_check(data["file"].size)
    try:
        options = ingest_services.import_options_clean(
            default_consent=data.get("default_consent"),
            topic=data.get("topic", ""),
            update_existing=not data["skip_existing"],
            default_country=data.get("default_country"),
        )
        with transaction.atomic():
            job = ingest_services.import_job_create(
                source=ImportSource.API, upload=data["file"], options=options, actor=request.user.get_username()
            )
            ingest_services.import_job_enqueue(job)
    except DjangoValidationError as exc:
        raise_as_drf(exc)
    body = ImportJobSerializer(job, context={"request": request}).data
    location = reverse("import-detail", args=[job.pk], request=request)
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location})
