"""Reads of import jobs and their row errors."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import QuerySet

from audience.ingest.readers import column_for
from audience.models import ImportJob, ImportRowError
from config import privacy
from config.spreadsheet import escape_formula

ERROR_CSV_HEADER = ("line", "column", "level", "reason", "value")


def import_job_list() -> QuerySet[ImportJob]:
    return ImportJob.objects.all()


def import_job_errors(job: ImportJob) -> QuerySet[ImportRowError]:
    return ImportRowError.objects.filter(job=job).order_by("line", "id")


def import_job_error_rows(job: ImportJob, *, full: bool) -> Iterator[tuple]:
    """The error report as CSV rows, every cell escaped against spreadsheet formulas; values masked unless ``full``."""
    yield ERROR_CSV_HEADER
    fields = ("line", "column", "level", "reason", "value")
    for line, column, level, reason, value in import_job_errors(job).values_list(*fields).iterator(chunk_size=5000):
        value = problem_value_shown(column, value, full)
        yield tuple(escape_formula(cell) for cell in (line, column, level, reason, value))


def problem_value_shown(column: str, value: str, full: bool) -> str:
    """A row problem's cell as the reader may see it: the phone, name or e-mail column masked, any other redacted."""
    if full or not value:
        return value
    kind = column_for(0, column or "").kind
    return privacy.shown(kind if kind in ("phone", "name", "email") else "text", value, full)
