"""Writes for import jobs: create (with the file saved), enqueue, claim, run, retry, confirm, purge.

Uploaded files go to Django's default storage (``STORAGES["default"]``) under ``imports/``: the
local MEDIA_ROOT in the embedded default, a bucket in production, so any web or worker node
reads what another received. The engine reads a local path: a file storage's own, or a
temporary copy downloaded for the run (``job_file``).
"""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audience.ingest.engine import Engine, ProgressCallback, bucket_count, inspect_file
from audience.ingest.files import import_storage, job_file, store_upload, upload_on_disk
from audience.ingest.readers import FileProblem, detect_format
from audience.models import TOPIC_NAME_VALIDATOR, ConsentStatus, ImportJob, ImportSource, ImportStatus
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


def import_job_create(
    *, source: str, options: dict[str, Any], upload=None, path: str | None = None, actor: str = ""
) -> ImportJob:
    """Read the file's header (a file that cannot be imported at all is refused), store it and record the job.

    An upload is stored only once its header passed, so a refused file is never kept.
    """
    if upload is not None:
        with upload_on_disk(upload) as local:
            file_name, size = upload.name, upload.size
            file_format, layout = _inspect(local, file_name, options)
        relative = store_upload(upload)
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
    from audience import tasks  # the tasks import these services: a cycle at module level

    # heartbeat_at: when it was queued, until a worker claims it (``import_jobs_resume`` reads it).
    now = timezone.now()
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.QUEUED, heartbeat_at=now)
    job.status, job.heartbeat_at = ImportStatus.QUEUED, now
    transaction.on_commit(lambda: tasks.import_job_run.delay(job.pk))
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
