"""Writes for import jobs: create (with the file saved), enqueue, claim, run, retry, preview.

Uploaded files go to Django's default storage (``STORAGES["default"]``) under ``imports/``: the
local MEDIA_ROOT in the embedded default, a bucket in production, so any web or worker node
reads what another received. The engine reads a local path: a file storage's own, or a
temporary copy downloaded for the run (``job_file``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import Storage, storages
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from audience.ingest import sql
from audience.ingest.engine import Engine, ProgressCallback, bucket_count, inspect_file, iter_chunks
from audience.ingest.options import IngestOptions
from audience.ingest.readers import FileProblem, detect_format
from audience.ingest.validate import STAGE_COLUMNS, copy_unescape, process_chunk
from audience.models import TOPIC_NAME_VALIDATOR, ConsentStatus, Contact, ImportJob, ImportSource, ImportStatus
from audience.phones import country_clean
from config.privacy import redact

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=5)
# A queued job no worker has taken this long after it was queued is queued again (its message was lost).
REQUEUE_AFTER = timedelta(minutes=10)
# A job whose worker died this many times is failed, not started again: it may be what kills the worker.
MAX_ATTEMPTS = 3
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
COPY_BLOCK = 1 << 20
FILE_PURGED = "the uploaded file was removed after the retention period; upload it again"


class ImportRejected(ValidationError):
    """The file or the options cannot be imported at all; the message says why."""


NO_CONSENT_COLUMN = (
    "the file has no consent column, so say which consent its contacts gave: opted_in or opted_out (nothing is assumed)"
)


def import_options_clean(
    *,
    default_consent: str | None = None,
    topic: str = "",
    update_existing: bool = True,
    default_country: str | None = None,
) -> dict:
    """The options of an import job. ``default_consent`` None: the file's consent column must say (no default).
    ``default_country``: of numbers written without a country code (None: the PHONE_DEFAULT_COUNTRY setting)."""
    default_consent = default_consent or None
    if default_consent is not None and default_consent not in ConsentStatus.values:
        raise ImportRejected(
            {"default_consent": [f"{default_consent!r} is not one of {', '.join(ConsentStatus.values)}"]}
        )
    topic = (topic or "").strip().lower()
    if topic:
        try:
            TOPIC_NAME_VALIDATOR(topic)
        except ValidationError as exc:
            raise ImportRejected({"topic": exc.messages}) from None
    try:
        country = country_clean(settings.PHONE_DEFAULT_COUNTRY if default_country is None else default_country)
    except ValueError as exc:
        raise ImportRejected({"default_country": [str(exc)]}) from None
    return {
        "default_consent": default_consent,
        "topic": topic,
        "update_existing": bool(update_existing),
        "default_country": country,
    }


def import_storage() -> Storage:
    """Where uploaded import files are kept: the default storage, shared by every node."""
    return storages["default"]


@contextmanager
def _upload_on_disk(upload) -> Iterator[str]:
    """A local path of an uploaded file: Django's temporary file, or a copy of a small in-memory one."""
    temporary = getattr(upload, "temporary_file_path", None)
    if temporary:
        yield temporary()
        return
    with tempfile.NamedTemporaryFile(prefix="import-upload-") as handle:
        upload.seek(0)
        for block in upload.chunks(COPY_BLOCK):
            handle.write(block)
        handle.flush()
        yield handle.name


def _upload_still_here(upload) -> bool:
    """Whether the upload can still be read: the file system storage moves a big one's temporary file."""
    temporary = getattr(upload, "temporary_file_path", None)
    return temporary is None or os.path.exists(temporary())


def _store_upload(upload) -> str:
    """Save an uploaded file to the storage under imports/; returns its name there."""
    name = SAFE_NAME.sub("_", os.path.basename(upload.name or "upload"))[-100:]
    upload.seek(0)
    return import_storage().save(f"imports/{uuid.uuid4().hex}-{name}", upload, max_length=500)


def _download(storage: Storage, name: str, handle) -> None:
    """Copy a stored file into ``handle``: an S3 bucket's object streamed by boto3, else in blocks."""
    bucket = getattr(storage, "bucket", None)
    if bucket is not None and hasattr(storage, "_normalize_name"):  # django-storages' S3Storage
        try:
            bucket.Object(storage._normalize_name(name)).download_fileobj(handle)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(f"the stored file {name} is gone") from None
            raise
    else:
        with storage.open(name, "rb") as stored:
            while block := stored.read(COPY_BLOCK):
                handle.write(block)
    handle.flush()


@contextmanager
def job_file(job: ImportJob) -> Iterator[str]:
    """A local path of the job's file while the block runs; FileNotFoundError once it is gone.

    The command's own file (an absolute path) is read where it is, and so is an upload in a
    storage with local paths (the file system); from any other (a bucket) the file is copied to
    a temporary file of this machine (TMPDIR) first and deleted after.
    """
    if not job.file_path:
        raise FileNotFoundError("the uploaded file was removed")
    if os.path.isabs(job.file_path):
        yield job.file_path
        return
    storage = import_storage()
    try:
        local = storage.path(job.file_path)
    except NotImplementedError:
        local = None
    if local is not None:
        if not os.path.exists(local):
            raise FileNotFoundError(f"the stored file {job.file_path} is gone")
        yield local
        return
    suffix = os.path.splitext(job.file_path)[1][:10]
    with tempfile.NamedTemporaryFile(prefix=f"import-{job.pk}-", suffix=suffix) as handle:
        _download(storage, job.file_path, handle)
        yield handle.name


def import_job_create(
    *, source: str, options: dict[str, Any], upload=None, path: str | None = None, actor: str = ""
) -> ImportJob:
    """Read the file's header (a file that cannot be imported at all is refused), store it and record the job.

    An upload is stored only once its header passed, so a refused file is never kept.
    """
    if upload is not None:
        with _upload_on_disk(upload) as local:
            file_name, size = upload.name, upload.size
            file_format, layout = _inspect(local, file_name, options)
        relative = _store_upload(upload)
    elif path is not None:
        relative = str(Path(path).resolve())
        file_name, size = os.path.basename(path), os.path.getsize(path)
        file_format, layout = _inspect(relative, file_name, options)
    else:
        raise ValueError("give an upload or a path")
    return ImportJob.objects.create(
        source=source,
        created_by=actor[:150],
        file_path=relative,
        file_name=file_name[:255],
        file_size=size,
        file_format=file_format,
        options=options,
        details=layout.describe(),
        batch_count=bucket_count(size),  # what the engine will write it in, shown before it starts
    )


def _inspect(path: str, file_name: str, options: dict[str, Any]):
    """The file's format and layout; ImportRejected when it cannot be imported at all."""
    file_format = detect_format(path, file_name)
    try:
        layout = inspect_file(path, file_format)
    except FileProblem as problem:
        raise ImportRejected({"file": [str(problem)]}) from None
    # A consent is never assumed: a CSV without a consent column needs the import's choice. A JSON
    # file has no header; each of its new contacts without a consent is refused on its row instead.
    if not options.get("default_consent") and file_format == "csv" and not layout.has_consent_column:
        raise ImportRejected({"default_consent": [NO_CONSENT_COLUMN]})
    return file_format, layout


def import_job_enqueue(job: ImportJob) -> ImportJob:
    """Queue the job for a Celery worker once the surrounding transaction commits."""
    from audience.tasks import ingest_contacts

    # heartbeat_at: when it was queued, until a worker claims it (``import_jobs_resume`` reads it).
    now = timezone.now()
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.QUEUED, heartbeat_at=now)
    job.status, job.heartbeat_at = ImportStatus.QUEUED, now
    transaction.on_commit(lambda: ingest_contacts.delay(job.pk))
    return job


def import_jobs_resume(*, now=None) -> dict[str, int]:
    """Queue again the background imports no worker is running; beat, every minute, safe to run twice.

    Two ways a job is left behind: its worker died (Celery gives the task out again at once, while
    the job's heartbeat is still fresh, so that delivery finds it taken and ends), or its task
    message never reached the broker. A running job whose heartbeat is older than STALE_AFTER,
    or a queued one not taken within REQUEUE_AFTER, is queued again; its committed batches are
    not written twice. After MAX_ATTEMPTS starts it is failed instead, for staff to look at.
    Imports run by ``manage.py import_contacts`` are the command's own and are left alone.
    """
    now = now or timezone.now()
    stalled = Q(status=ImportStatus.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    lost = Q(status=ImportStatus.QUEUED) & (
        Q(heartbeat_at__lt=now - REQUEUE_AFTER) | Q(heartbeat_at__isnull=True, created_at__lt=now - REQUEUE_AFTER)
    )
    jobs = ImportJob.objects.exclude(source=ImportSource.COMMAND)
    failed = jobs.filter(stalled, attempts__gte=MAX_ATTEMPTS).update(
        status=ImportStatus.FAILED,
        stage="failed",
        error=f"the worker stopped {MAX_ATTEMPTS} times while running this import; committed batches are kept, "
        "re-run it once the cause (memory, a restart loop) is fixed",
        finished_at=now,
    )
    requeued = 0
    for job in jobs.filter(stalled | lost).order_by("pk")[:100]:
        with transaction.atomic():
            # Conditional: a worker that claimed the job since it was read keeps it.
            if not ImportJob.objects.filter(stalled | lost, pk=job.pk).update(status=ImportStatus.QUEUED):
                continue
            import_job_enqueue(job)
        requeued += 1
    if failed or requeued:
        logger.warning("imports: %s queued again, %s failed after %s starts", requeued, failed, MAX_ATTEMPTS)
    return {"requeued": requeued, "failed": failed}


def import_job_claim(job_id: int) -> ImportJob | None:
    """Take the job for this process, or None when another run has it (or it is finished)."""
    now = timezone.now()
    claimable = Q(status__in=[ImportStatus.QUEUED, ImportStatus.PENDING]) | Q(
        status=ImportStatus.RUNNING, heartbeat_at__lt=now - STALE_AFTER
    )
    claimed = ImportJob.objects.filter(claimable, pk=job_id).update(
        status=ImportStatus.RUNNING, started_at=now, heartbeat_at=now, finished_at=None
    )
    if not claimed:
        return None
    job = ImportJob.objects.get(pk=job_id)
    ImportJob.objects.filter(pk=job_id).update(attempts=job.attempts + 1)
    return job


def import_job_run(job: ImportJob, *, on_progress: ProgressCallback | None = None, workers: int = 0) -> ImportJob:
    """Run a claimed job through the engine; an unexpected failure marks the job failed and is raised."""
    try:
        with job_file(job) as path:
            return Engine(job, path, on_progress=on_progress, workers=workers).run()
    except FileNotFoundError:
        return _fail(job, "the uploaded file is no longer on the server; upload it again")
    except Exception as exc:
        # An exception's text may quote a row (a database error's DETAIL): stored, so redacted.
        reason = f"{type(exc).__name__}: {redact(str(exc))}"
        _fail(job, f"the import stopped: {reason}; committed batches are kept, re-run it")
        raise


def _fail(job: ImportJob, reason: str) -> ImportJob:
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportStatus.FAILED, stage="failed", error=reason[:2000], finished_at=timezone.now()
    )
    job.refresh_from_db()
    return job


def import_job_retry(job: ImportJob) -> ImportJob:
    """Queue a failed (or crashed) job again; committed batches are not written twice."""
    stale = job.status == ImportStatus.RUNNING and (job.heartbeat_at or job.created_at) < timezone.now() - STALE_AFTER
    if job.status != ImportStatus.FAILED and not stale:
        raise ImportRejected("only a failed or stalled import can be re-run")
    if not job.file_path:
        raise ImportRejected(FILE_PURGED)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.QUEUED, error="")
    return import_job_enqueue(job)


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
    if upload is not None and _upload_still_here(upload):
        with _upload_on_disk(upload) as path:
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
    params: dict[str, object] = {column: [row[column] for row in rows] for column in columns}
    params["attributes"] = [row["attributes"] for row in rows]  # JSON text, or None
    params.update(sql.ENUMS)
    with connection.cursor() as cursor:
        cursor.execute(sql.CHANGED_PHONES, params)
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


def import_job_confirm(job: ImportJob, *, inline_max_bytes: int | None = None) -> ImportJob:
    """Start a previewed job: a small file runs here and now, a big one goes to a Celery worker."""
    if not job.file_path:
        raise ImportRejected(FILE_PURGED)
    limit = settings.INGEST_INLINE_MAX_BYTES if inline_max_bytes is None else inline_max_bytes
    if job.file_size > limit:
        return import_job_enqueue(job)
    claimed = import_job_claim(job.pk)
    if claimed is None:
        return job
    return import_job_run(claimed, workers=1)


def import_files_purge(*, days: int | None = None) -> int:
    """Delete uploaded import files (they hold phone numbers) ``days`` after their job ended.

    Only uploads (the storage's imports/) go; a file the command named by its own path is the
    user's and stays. A job never confirmed counts from its creation. The path is cleared by a
    conditional update first, so a job that started meanwhile keeps its file, and a second run
    finds nothing. Returns the number of files removed.
    """
    days = settings.RETENTION_IMPORT_FILES_DAYS if days is None else days
    if days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    ended = Q(status__in=[ImportStatus.SUCCEEDED, ImportStatus.FAILED], finished_at__lt=cutoff)
    abandoned = Q(status=ImportStatus.PENDING, created_at__lt=cutoff)
    candidates = ImportJob.objects.filter(ended | abandoned, file_path__startswith="imports/")
    storage = import_storage()
    removed = 0
    for job_id, relative in list(candidates.values_list("pk", "file_path")):
        if not ImportJob.objects.filter(ended | abandoned, pk=job_id, file_path=relative).update(file_path=""):
            continue
        if storage.exists(relative):
            storage.delete(relative)
            removed += 1
    return removed
