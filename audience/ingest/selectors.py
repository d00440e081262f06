"""Reads of import jobs and their row errors."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import QuerySet

from audience.models import ImportJob, ImportRowError
from config.spreadsheet import escape_formula

ERROR_CSV_HEADER = ("line", "column", "level", "reason", "value")


def import_job_list() -> QuerySet[ImportJob]:
    return ImportJob.objects.all()


def import_job_errors(job: ImportJob) -> QuerySet[ImportRowError]:
    return ImportRowError.objects.filter(job=job).order_by("line", "id")


def import_job_error_rows(job: ImportJob) -> Iterator[tuple]:
    """The error report as CSV rows, every cell escaped against spreadsheet formulas."""
    yield ERROR_CSV_HEADER
    fields = ("line", "column", "level", "reason", "value")
    for row in import_job_errors(job).values_list(*fields).iterator(chunk_size=5000):
        yield tuple(escape_formula(cell) for cell in row)
