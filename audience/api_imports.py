"""REST API for contact imports: a file posted to /api/v1/contacts/import, the jobs at /api/v1/imports/."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action, api_view, parser_classes
from rest_framework.exceptions import APIException
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.reverse import reverse

from audience.ingest import selectors as ingest_selectors
from audience.ingest import services as ingest_services
from audience.models import (
    ConsentStatus,
    ImportJob,
    ImportRowError,
    ImportSource,
)
from config import privacy
from config.api import raise_as_drf
from config.spreadsheet import csv_download

IMPORT_ERRORS_SHOWN = 100
# Room for the multipart boundaries and the other fields around the file in a Content-Length.
MULTIPART_OVERHEAD = 64 * 1024


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
