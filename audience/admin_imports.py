"""The contact admin's import pages: upload and dry run, confirm, the job's progress, its problems as CSV."""

from __future__ import annotations

import csv
import io
import json

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST
from import_export.admin import ImportMixin

from audience.admin_forms import ContactImportForm
from audience.ingest import preview as ingest_preview
from audience.ingest import selectors as ingest_selectors
from audience.ingest import services as ingest_services
from audience.models import ImportJob, ImportSource, ImportStatus
from audience.resources import ContactImportResource
from config import privacy
from config.spreadsheet import csv_download

PREVIEW_ROWS = 1000
PREVIEW_SHOWN = 200


class ContactImportMixin(ImportMixin):
    """The import page of django-import-export, with every file handed to the ingest engine.

    Upload -> the file is saved and the first rows are validated (dry run, per-row
    problems shown) -> confirm -> a small file is ingested at once, a big one by a
    Celery worker, and the job page shows a progress bar until it is done.
    """

    import_template_name = "admin/audience/contact/import.html"
    import_form_class = ContactImportForm
    import_export_change_list_template = "admin/import_export/change_list_import_export.html"

    def get_import_resource_classes(self, request):
        return [ContactImportResource]

    def has_import_permission(self, request) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def get_urls(self):
        job_urls = [
            path("import/<int:job_id>/", self.admin_site.admin_view(self.import_job_view), name="audience_import_job"),
            path(
                "import/<int:job_id>/status/",
                self.admin_site.admin_view(self.import_job_status),
                name="audience_import_job_status",
            ),
            path(
                "import/sample.csv",
                self.admin_site.admin_view(self.import_sample_csv),
                name="audience_import_sample",
            ),
            path(
                "import/<int:job_id>/errors.csv",
                self.admin_site.admin_view(self.import_job_errors),
                name="audience_import_job_errors",
            ),
        ]
        return job_urls + super().get_urls()

    def import_action(self, request, **kwargs):
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = self.create_import_form(request)
        context = {}
        if request.method == "POST" and form.is_valid():
            try:
                job = ingest_services.import_job_create(
                    source=ImportSource.ADMIN,
                    upload=form.cleaned_data["import_file"],
                    options=form.cleaned_data["options"],
                    actor=request.user.get_username(),
                )
            except ValidationError as exc:
                for name, errors in exc.message_dict.items():
                    form.add_error(name if name in form.fields else "import_file", errors)
            else:
                upload = form.cleaned_data["import_file"]  # still on this machine: no download for the preview
                preview = ingest_preview.import_preview(job, limit=PREVIEW_ROWS, upload=upload)
                ingest_preview.import_preview_record(job, preview)
                context.update(job=job, preview=preview, preview_rows=rows_shown(preview.rows[:PREVIEW_SHOWN]))
        return self._import_page(request, form, context)

    def _import_page(self, request, form, extra: dict) -> TemplateResponse:
        resource = ContactImportResource()
        context = {
            **self.admin_site.each_context(request),
            "title": "Import contacts",
            "form": form,
            "opts": self.model._meta,
            "media": self.media + form.media,
            "fields_list": [
                (resource.get_display_name(), [field.column_name for field in resource.get_user_visible_fields()])
            ],
            **extra,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, [self.import_template_name], context)

    @method_decorator(require_POST)
    def process_import(self, request, **kwargs):
        if not self.has_import_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=request.POST.get("job"), source=ImportSource.ADMIN)
        second_look = (job.details or {}).get("preview_needs_second_look")
        if job.status == ImportStatus.PENDING and second_look and not request.POST.get("accept_errors"):
            self.message_user(
                request,
                f"Import #{job.pk} was not started: too many of the rows checked have errors and would be left out. "
                "Read the problems, then tick the box to import the rest anyway.",
                messages.ERROR,
            )
            try:
                preview = ingest_preview.import_preview(job, limit=PREVIEW_ROWS)
            except FileNotFoundError:
                return redirect("admin:audience_contact_import")
            context = {"job": job, "preview": preview, "preview_rows": rows_shown(preview.rows[:PREVIEW_SHOWN])}
            return self._import_page(request, self.create_import_form(request), context)
        if job.status != ImportStatus.PENDING:
            self.message_user(request, f"Import #{job.pk} was already confirmed.", messages.WARNING)
        else:
            try:
                ingest_services.import_job_confirm(job)
            except ingest_services.ImportRejected as exc:
                self.message_user(request, f"Import #{job.pk} cannot start: {'; '.join(exc.messages)}.", messages.ERROR)
        return redirect("admin:audience_import_job", job_id=job.pk)

    def import_job_view(self, request, job_id: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=job_id)
        full = privacy.request_sees_full(request)
        problems = list(ingest_selectors.import_job_errors(job)[:PREVIEW_SHOWN])
        for problem in problems:
            problem.value = ingest_selectors.problem_value_shown(problem.column, problem.value, full)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import #{job.pk}: {privacy.shown('text', job.file_name, full)}",
            "opts": self.model._meta,
            "job": job,
            "status_url": reverse("admin:audience_import_job_status", args=[job.pk]),
            "errors_url": reverse("admin:audience_import_job_errors", args=[job.pk]),
            "problems": problems,
        }
        return TemplateResponse(request, "admin/audience/contact/import_job.html", context)

    def import_job_status(self, request, job_id: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=job_id)
        return JsonResponse(import_job_progress(job))

    def import_sample_csv(self, request):
        if not self.has_import_permission(request):
            raise PermissionDenied
        return sample_csv_response()

    def import_job_errors(self, request, job_id: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=job_id)
        return error_csv_response(job, full=privacy.request_sees_full(request))


def rows_shown(rows: list[dict]) -> list[dict]:
    """Dry-run rows in people's words: topics as a list, attributes as name and value pairs."""
    shown = []
    for row in rows:
        topics = (row.get("topics") or "").strip("{}")
        attributes = json.loads(row["attributes"]) if row.get("attributes") else {}
        shown.append(
            {
                **row,
                "topics": ", ".join(topic.strip('"') for topic in topics.split(",") if topic),
                "attributes": sorted(attributes.items()),
            }
        )
    return shown


def import_job_progress(job: ImportJob) -> dict:
    counts = ("total_rows", "created_count", "updated_count", "unchanged_count", "skipped_count", "invalid_count")
    counts += ("duplicate_count", "warning_count")
    return {
        "id": job.pk,
        "status": job.status,
        "status_label": job.outcome,
        "stage": job.stage,
        "progress": round(job.progress, 1),
        "finished": job.is_finished,
        "error": job.error,
        **{name: getattr(job, name) for name in counts},
    }


# The sample offered on the import page: every column the importer reads, and typed attributes.
SAMPLE_HEADER = ("phone", "name", "email", "channel", "locale", "timezone", "consent", "topics")
SAMPLE_ATTRIBUTES = ("city", "age", "vip", "signup_date")
SAMPLE_ROWS = (
    (
        "+254712345678",
        "Amina Otieno",
        "amina@example.com",
        "whatsapp",
        "sw",
        "Africa/Nairobi",
        "opted_in",
        "promotions|news",
        "Nairobi",
        "34",
        "true",
        "2026-03-14",
    ),
    (
        "0044 7911 123456",
        "Oliver Smith",
        "",
        "sms",
        "en-GB",
        "Europe/London",
        "opted_in",
        "news",
        "London",
        "52",
        "false",
        "2025-11-02",
    ),
    (
        "+1 (415) 555-0142",
        "María López",
        "maria@example.com",
        "sms",
        "es-US",
        "America/Los_Angeles",
        "opted_out",
        "",
        "San Francisco",
        "27",
        "false",
        "2026-07-30",
    ),
)


def sample_csv_response() -> HttpResponse:
    """A small CSV the importer accepts as it is: a starting point for a real file."""
    lines = io.StringIO()
    writer = csv.writer(lines, lineterminator="\n")
    writer.writerow(SAMPLE_HEADER + SAMPLE_ATTRIBUTES)
    writer.writerows(SAMPLE_ROWS)
    response = HttpResponse(lines.getvalue().encode(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="contacts-sample.csv"'
    return response


def error_csv_response(job: ImportJob, *, full: bool) -> StreamingHttpResponse:
    return csv_download(ingest_selectors.import_job_error_rows(job, full=full), f"import-{job.pk}-errors.csv")
