"""The dry run: the first rows of a file validated as the import would, and what each would do."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from audience.ingest import sql, sql_upsert
from audience.ingest.engine import inspect_file, iter_chunks
from audience.ingest.files import job_file, upload_on_disk, upload_still_here
from audience.ingest.options import IngestOptions
from audience.ingest.validate import STAGE_COLUMNS, copy_unescape, process_chunk
from audience.models import ConsentStatus, Contact, ImportJob


@dataclass
class Preview:
    """The dry run of the first rows: what each would do, and every problem in them."""

    rows: list[dict] = field(default_factory=list)
    problems: list[tuple[int, str, str, str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    complete: bool = True
    checked: int = 0

    @property
    def error_share(self) -> float:
        """The share of the checked rows that have errors (they will be left out)."""
        return self.counts.get("error", 0) / self.checked if self.checked else 0.0

    @property
    def needs_second_look(self) -> bool:
        """Too many rows would be left out to confirm on one click (IMPORT_CONFIRM_ERROR_SHARE)."""
        return self.error_share > settings.IMPORT_CONFIRM_ERROR_SHARE


def import_preview_record(job: ImportJob, preview: Preview) -> None:
    """Keep the dry run's verdict on the job: confirming it then asks again when too many rows failed."""
    job.details = {
        **(job.details or {}),
        "preview_error_share": round(preview.error_share, 4),
        "preview_needs_second_look": preview.needs_second_look,
    }
    job.save(update_fields=["details"])


def import_preview(job: ImportJob, *, limit: int = 1000, upload=None) -> Preview:
    """Validate up to ``limit`` rows in this process and say which would create or update a contact.

    ``upload``: the request's own uploaded file, still on this machine, read instead of the stored
    copy (a bucket's would be downloaded whole for a few rows).
    """
    if upload is not None and upload_still_here(upload):
        with upload_on_disk(upload) as path:
            return _preview(job, path, limit)
    with job_file(job) as path:
        return _preview(job, path, limit)


def _preview(job: ImportJob, path: str, limit: int) -> Preview:
    layout = inspect_file(path, job.file_format)
    layout = dataclasses.replace(layout, default_region=IngestOptions.from_job(job).default_country)
    chunks, json_reader = iter_chunks(path, layout)
    preview = Preview(notes=list(layout.notes))
    seen = 0
    for chunk in chunks:
        result = process_chunk(chunk, layout, 1)
        preview.problems.extend(result.problems)
        preview.rows.extend(_parse_copy_lines(result.copy_data))
        seen += result.rows
        if seen >= limit:
            preview.complete = chunk.end_offset >= job.file_size
            break
    preview.checked = seen
    if json_reader and json_reader.problem:
        problem = json_reader.problem
        preview.problems.append((problem.line, problem.column, "error", problem.reason, ""))
    _classify(preview, job.options)
    return preview


def _parse_copy_lines(data: bytes) -> list[dict]:
    """The staged rows of COPY text, values as they will be stored (COPY's escapes undone).

    Split on "\n" only: str.splitlines also splits on characters COPY does not escape (U+2028,
    form feed, ...), which a cell may hold.
    """
    rows = []
    for line in data.decode("utf-8").split("\n"):
        if not line:
            continue
        cells = [None if cell == "\\N" else copy_unescape(cell) for cell in line.split("\t")]
        rows.append(dict(zip(STAGE_COLUMNS, cells, strict=True)))
    return rows


def _changing_phones(rows: list[dict]) -> set[str]:
    """The phones of ``rows`` whose import would change their existing contact (the engine's own test)."""
    if not rows:
        return set()
    columns = ("phone", "channel", "name", "email", "locale", "timezone", "consent")
    params: dict[str, Any] = {column: [row[column] for row in rows] for column in columns}
    params["attributes"] = [row["attributes"] for row in rows]  # JSON text, or None
    params.update(sql.ENUMS)
    with connection.cursor() as cursor:
        cursor.execute(sql_upsert.CHANGED_PHONES, params)
        return {phone for (phone,) in cursor.fetchall()}


def _classify(preview: Preview, options: dict) -> None:
    # The last row of each phone, by position: elements of a minified JSON array share line 1.
    last = {row["phone"]: index for index, row in enumerate(preview.rows)}
    found = Contact.objects.filter(phone__in=list(last)).values_list("phone", "consent_status", "opted_out_at")
    existing = {phone: (status, opted_out_at) for phone, status, opted_out_at in found}
    update = options.get("update_existing", True)
    default_consent = options.get("default_consent")
    changing = _changing_phones([row for index, row in enumerate(preview.rows) if last[row["phone"]] == index])
    counts = {"new": 0, "update": 0, "unchanged": 0, "skip": 0, "duplicate": 0, "error": 0}
    for index, row in enumerate(preview.rows):
        if last[row["phone"]] != index:
            row["action"] = "duplicate"
        elif row["phone"] not in existing and row["consent"] is None and not default_consent:
            row["action"] = "error"
            preview.problems.append((int(row["line"]), "consent", "error", sql.NO_CONSENT, ""))
        elif row["phone"] in existing:
            row["action"] = ("update" if row["phone"] in changing else "unchanged") if update else "skip"
            status, opted_out_at = existing[row["phone"]]
            if update and row["consent"] == ConsentStatus.OPTED_IN and status == ConsentStatus.OPTED_OUT:
                warning = (int(row["line"]), "consent", "warning", sql.refused_opt_in(opted_out_at), row["consent"])
                preview.problems.append(warning)
        else:
            row["action"] = "new"
        counts[row["action"]] += 1
    counts["error"] = len({problem[0] for problem in preview.problems if problem[2] == "error"})
    preview.counts = counts
    preview.rows.sort(key=lambda row: int(row["line"]))
    preview.problems.sort(key=lambda problem: problem[0])
