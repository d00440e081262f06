"""The ingest engine: stream, validate on every core, COPY to staging, one set-based upsert per batch.

1. A reader cuts the file into chunks of whole records; a process pool
   (audience.ingest.pool) validates them (phone normalisation is the
   bottleneck) with a bounded number of chunks in flight, so memory stays
   flat whatever the file size. A small file is validated in the main process instead.
2. Each worker COPYs its chunk's good rows into a staging table partitioned
   by bucket (UNLOGGED partitions) over a connection of its own
   (audience.ingest.worker); the main process COPYs the problems into
   ImportRowError.
3. Each bucket of phones (a crc32 hash; a phone's duplicates share its
   bucket) is written in one transaction, two buckets at a time
   (audience.ingest.buckets), the bucket committed together with its record
   on the job (synchronous_commit off: a crash loses whole, most recent
   buckets together with their record). A re-run re-reads the file,
   re-counts every bucket's warnings and upserts only the buckets not
   committed; the upsert is idempotent anyway.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import connection
from django.utils import timezone

from audience.attributes import AttributeLimits
from audience.ingest import sql
from audience.ingest.buckets import READ_SHARE, BucketWriter
from audience.ingest.json_reader import JsonArrayReader, inspect_json
from audience.ingest.options import IngestOptions
from audience.ingest.pool import validate_in_pool
from audience.ingest.readers import (
    Chunk,
    FileProblem,
    Layout,
    inspect_csv,
    iter_csv_chunks,
    iter_jsonl_chunks,
)
from audience.ingest.validate import STAGE_COLUMNS, ChunkResult, process_chunk
from audience.models import ImportJob, ImportRowError, ImportStatus, Topic

ProgressCallback = Callable[[ImportJob], None]
BUCKET_THRESHOLD_BYTES = 8 << 20
BUCKETS_FOR_BIG_FILES = 8
SMALL_FILE_BYTES = 1 << 20  # below this, starting worker processes costs more than it saves
PROGRESS_EVERY_S = 0.5
ERROR_COLUMNS = ("job_id", "line", "column", "level", "reason", "value")


def inspect_file(path: str, file_format: str) -> Layout:
    """The file's layout, with the attribute limits its rows are held to. Raises FileProblem."""
    limits = AttributeLimits.from_settings()
    if file_format != "csv":
        return dataclasses.replace(inspect_json(path, file_format), attribute_limits=limits)
    layout = dataclasses.replace(inspect_csv(path), attribute_limits=limits)
    # Attribute columns are the same in every row: past a limit, the file is refused once, not every row.
    attributes = [column for column in layout.columns if column.kind == "attribute"]
    if limits.too_many(len(attributes)):
        raise FileProblem(
            f"{len(attributes)} attribute columns; a contact may have at most {limits.max_keys} attributes"
        )
    for column in attributes:
        if reason := limits.key_problem(column.key):
            raise FileProblem(reason, column=column.header)
    return layout


def iter_chunks(path: str, layout: Layout) -> tuple[Iterator[Chunk], JsonArrayReader | None]:
    if layout.file_format == "csv":
        return iter_csv_chunks(path, layout), None
    if layout.file_format == "jsonl":
        return iter_jsonl_chunks(path, layout), None
    reader = JsonArrayReader(path, layout)
    return iter(reader), reader


def bucket_count(file_size: int) -> int:
    return 1 if file_size < BUCKET_THRESHOLD_BYTES else BUCKETS_FOR_BIG_FILES


def worker_count() -> int:
    """Validation processes: settings.INGEST_WORKERS, or one per available core when it is 0."""
    return max(1, settings.INGEST_WORKERS or len(os.sched_getaffinity(0)))


class Engine:
    """Runs one claimed ImportJob to the end; the job row is the only state."""

    def __init__(self, job: ImportJob, path: str, *, on_progress: ProgressCallback | None = None, workers: int = 0):
        self.job = job
        self.path = path
        self.options = IngestOptions.from_job(job)
        self.on_progress = on_progress
        self.workers = workers or (1 if job.file_size < SMALL_FILE_BYTES else worker_count())
        self.stage = sql.stage_name(job.pk)
        self._last_progress = 0.0
        self._topics: set[str] = set()
        self._timings: dict[str, float] = {}

    # --- the whole run ---------------------------------------------------------------------

    def run(self) -> ImportJob:
        if connection.in_atomic_block:
            raise RuntimeError("the ingest engine commits as it goes; call it outside transaction.atomic()")
        try:
            layout = inspect_file(self.path, self.job.file_format)
        except FileProblem as problem:
            return self._fail_file(problem)
        layout = dataclasses.replace(layout, default_region=self.options.default_country)
        self._start(layout)
        try:
            reader_problem = self._timed("read", self._load, layout)
            if reader_problem:
                self._record_file_problem(reader_problem)
            self._timed("prepare", self._prepare)
            self._timed("write", self._write)
        finally:
            self._drop_stage()
        return self._finish()

    def _timed(self, phase: str, step: Callable, *args):
        started = time.monotonic()
        try:
            return step(*args)
        finally:
            self._timings[phase] = round(time.monotonic() - started, 3)

    def _start(self, layout: Layout) -> None:
        self.job.details = {**(self.job.details or {}), **layout.describe()}
        self.job.batch_count = bucket_count(self.job.file_size)
        self.job.stage, self.job.progress, self.job.error = "reading", 0.0, ""
        for name in ("total_rows", "invalid_count", "duplicate_count", "warning_count"):
            setattr(self.job, name, 0)
        self.job.save(
            update_fields=[
                "details",
                "batch_count",
                "stage",
                "progress",
                "error",
                "total_rows",
                "invalid_count",
                "duplicate_count",
                "warning_count",
            ]
        )
        ImportRowError.objects.filter(job=self.job).delete()
        with connection.cursor() as cursor:
            cursor.execute(sql.drop_stage(self.stage))
            for statement in sql.create_stage(self.stage, self.job.batch_count):
                cursor.execute(statement)

    # --- phase 1: read, validate, COPY -----------------------------------------------------

    def _load(self, layout: Layout) -> FileProblem | None:
        chunks, json_reader = iter_chunks(self.path, layout)
        try:
            if self.workers == 1:
                for chunk in chunks:
                    self._store(process_chunk(chunk, layout, self.job.batch_count))
            else:
                validate_in_pool(chunks, layout, self.job.batch_count, self.stage, self.workers, self._store)
        except FileProblem as problem:
            return problem
        finally:
            self._save_progress(force=True)
        return json_reader.problem if json_reader else None

    def _store(self, result: ChunkResult) -> None:
        with connection.cursor() as cursor:
            if result.copy_data:  # a chunk validated in this process (a worker COPYs its own)
                with cursor.copy(sql.copy_from_stdin(self.stage, STAGE_COLUMNS)) as copy:
                    copy.write(result.copy_data)
            if result.problems:
                with cursor.copy(sql.copy_from_stdin(sql.ROW_ERROR, ERROR_COLUMNS)) as copy:
                    for problem in result.problems:
                        copy.write_row((self.job.pk, *problem))
        self.job.total_rows += result.rows
        self.job.invalid_count += result.invalid
        self.job.warning_count += result.warnings
        self._topics.update(result.topics)
        size = max(self.job.file_size, 1)
        self.job.progress = min(READ_SHARE, READ_SHARE * result.end_offset / size)
        self._save_progress()

    def _save_progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        fields = ["progress", "stage", "total_rows", "invalid_count", "warning_count", "duplicate_count"]
        ImportJob.objects.filter(pk=self.job.pk).update(
            heartbeat_at=timezone.now(), **{name: getattr(self.job, name) for name in fields}
        )
        if self.on_progress:
            self.on_progress(self.job)

    def _record_file_problem(self, problem: FileProblem) -> None:
        ImportRowError.objects.create(
            job=self.job, line=problem.line, column=problem.column, level="error", reason=problem.reason
        )
        self.job.invalid_count += 1
        self.job.error = str(problem)
        ImportJob.objects.filter(pk=self.job.pk).update(error=self.job.error, invalid_count=self.job.invalid_count)

    # --- phase 2: topics ----------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create the file's topics; everything else is per bucket, in the writer sessions."""
        names = set(self._topics)
        if self.options.topic:
            names.add(self.options.topic)
        if names:
            Topic.objects.bulk_create([Topic(name=name) for name in sorted(names)], ignore_conflicts=True)
        self.job.progress = READ_SHARE + 2
        self._save_progress(force=True)

    # --- phase 3: one upsert per bucket, each committed with its record ---------------------

    def _write(self) -> None:
        self.job.stage = "writing"
        self._save_progress(force=True)
        BucketWriter(self.job, self.options, self.stage, topics=self._topics, workers=self.workers).write_all()

    # --- the end ---------------------------------------------------------------------------

    def _drop_stage(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql.drop_stage(self.stage))

    def _finish(self) -> ImportJob:
        entries = self.job.committed_batches
        ImportJob.objects.filter(pk=self.job.pk).update(
            status=ImportStatus.SUCCEEDED,
            stage="done",
            progress=100.0,
            created_count=sum(entry["created"] for entry in entries),
            updated_count=sum(entry["updated"] for entry in entries),
            unchanged_count=sum(entry["unchanged"] for entry in entries),
            skipped_count=sum(entry["skipped"] for entry in entries),
            total_rows=self.job.total_rows,
            invalid_count=self.job.invalid_count,
            duplicate_count=self.job.duplicate_count,
            warning_count=self.job.warning_count,
            finished_at=timezone.now(),
            heartbeat_at=timezone.now(),
            details={**self.job.details, "seconds": self._timings},
        )
        self.job.refresh_from_db()
        if self.on_progress:
            self.on_progress(self.job)
        return self.job

    def _fail_file(self, problem: FileProblem) -> ImportJob:
        ImportRowError.objects.filter(job=self.job).delete()
        ImportRowError.objects.create(
            job=self.job, line=problem.line, column=problem.column, level="error", reason=problem.reason
        )
        ImportJob.objects.filter(pk=self.job.pk).update(
            status=ImportStatus.FAILED, stage="failed", error=str(problem), finished_at=timezone.now()
        )
        self.job.refresh_from_db()
        if self.on_progress:
            self.on_progress(self.job)
        return self.job
