"""The ingest engine: stream, validate on every core, COPY to staging, one set-based upsert per batch.

1. A reader cuts the file into chunks of whole records; a process pool
   validates them (phone normalisation is the bottleneck) with a bounded
   number of chunks in flight, so memory stays flat whatever the file size.
2. Each worker COPYs its chunk's good rows into a staging table partitioned
   by bucket (UNLOGGED partitions) over a connection of its own
   (audience.ingest.worker); the main process COPYs the problems into
   ImportRowError. A small file is validated in the main process instead.
3. Each bucket of phones (a crc32 hash; a phone's duplicates share its
   bucket) is written in one transaction, two buckets at a time: set-based
   SQL drops its in-file duplicates (the last row wins) and marks suppressed
   phones. When the contacts table was empty at the start, one plain INSERT
   with ids from the sequence writes the bucket's contacts, and its CTEs their
   ContactTopic rows and pending consent events. Otherwise one join with the contacts
   takes out the rows that would change nothing, the rows with new phones are
   inserted plainly in the same way, and the rest go through one
   ``INSERT ... SELECT ... ON CONFLICT (phone) DO UPDATE``. Each statement
   reads only its own stage partition. The pending consent events are then
   chained into the audit in one statement (audience.consent_chain: the chain's
   lock is held from there to the commit); the same transaction records the bucket as
   committed on the job (synchronous_commit off: a crash loses whole, most
   recent buckets together with their record). A re-run re-reads the file,
   re-counts every bucket's warnings and upserts only the buckets not
   committed; the upsert is idempotent anyway.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.conninfo import make_conninfo

from audience.attributes import AttributeLimits
from audience.consent_chain import consent_events_insert
from audience.ingest import sql
from audience.ingest.readers import (
    Chunk,
    FileProblem,
    JsonArrayReader,
    Layout,
    inspect_csv,
    inspect_json,
    iter_csv_chunks,
    iter_jsonl_chunks,
)
from audience.ingest.validate import STAGE_COLUMNS, ChunkResult, process_chunk
from audience.ingest.worker import process_chunk_in_worker, worker_start
from audience.models import ImportJob, ImportRowError, ImportStatus, Topic

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[ImportJob], None]
BUCKET_THRESHOLD_BYTES = 8 << 20
BUCKETS_FOR_BIG_FILES = 8
WRITER_SESSIONS = 2
WRITER_WORK_MEM = "64MB"  # the bucket's CTEs and sorts stay in memory instead of spilling to temp files
SMALL_FILE_BYTES = 1 << 20  # below this, starting worker processes costs more than it saves
READ_SHARE = 80.0  # percent of the progress bar for reading and validating
PROGRESS_EVERY_S = 0.5
CONTACT_PHONE_KEY = "audience_contact_phone_key"  # the unique constraint on Contact.phone
ERROR_COLUMNS = ("job_id", "line", "column", "level", "reason", "value")


@dataclass(frozen=True)
class IngestOptions:
    default_consent: str | None = None  # None: rows of new contacts must give their consent
    topic: str = ""
    update_existing: bool = True
    default_country: str = ""  # of phone numbers written without a country code; "" for none

    @classmethod
    def from_job(cls, job: ImportJob) -> IngestOptions:
        options = job.options or {}
        return cls(
            default_consent=options.get("default_consent") or None,
            topic=options.get("topic", "") or "",
            update_existing=options.get("update_existing", True),
            default_country=options.get("default_country", settings.PHONE_DEFAULT_COUNTRY) or "",
        )


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


# Connection parameters Django passes to psycopg that are not libpq's.
_NOT_LIBPQ = frozenset({"cursor_factory", "context", "prepare_threshold", "server_side_binding"})


def _conninfo() -> str:
    """libpq parameters for a worker's own connection: the database Django's connection uses."""
    params = connection.get_connection_params()
    return make_conninfo(
        "", **{key: value for key, value in params.items() if key not in _NOT_LIBPQ and value not in (None, "")}
    )


def _pool_context():
    """Workers fork from a small server process that imported only the validation code.

    Forking the web or Celery process itself would give each worker a copy of
    everything that process had loaded; the fork server keeps the tree small.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["audience.ingest.worker"])
    return context


@contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process (a Celery prefork child) start the validation pool.

    multiprocessing refuses children in daemonic processes so that they cannot be
    orphaned; the pool is closed (and its workers end) when the engine leaves the
    ``with`` block, and a worker whose parent dies reads EOF and exits.
    """
    current = multiprocessing.current_process()
    saved = dict(current._config)
    current._config["daemon"] = False
    # A Celery (billiard) child carries billiard's authkey type, which the fork server cannot be sent.
    current._config["authkey"] = multiprocessing.process.AuthenticationString(bytes(current.authkey))
    try:
        yield
    finally:
        current._config.update(saved)


def _run_with_nested_loops(cursor, statement: str, params: dict | None = None) -> list[tuple] | None:
    """Run a statement joining the stage to the contacts with nested loops allowed again; its rows, if any.

    The bucket's transaction forbids them (the CTEs' row counts are unknown to the
    planner). For this join the planner knows both sizes (the stage's from its
    index build, or from its pages before that) and picks: hashing the contacts for a big file, probing the
    phone index a row at a time for a small file into a big table, where a hash
    join would read every contact for each bucket.
    """
    cursor.execute("SET LOCAL enable_nestloop = on")
    cursor.execute(statement, params)
    rows = cursor.fetchall() if cursor.description else None
    cursor.execute("SET LOCAL enable_nestloop = off")
    return rows


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
        self._lock = threading.Lock()
        self._plain = False  # the contacts table was empty when the write began
        self._id_sequence = ""

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
            self._timed("write", self._upsert_buckets)
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
                self._load_in_pool(chunks, layout)
        except FileProblem as problem:
            return problem
        finally:
            self._save_progress(force=True)
        return json_reader.problem if json_reader else None

    def _load_in_pool(self, chunks: Iterator[Chunk], layout: Layout) -> None:
        """Validate chunks on every core, at most a few in flight, storing results in file order."""
        window = self.workers * 2 + 1
        initargs = (_conninfo(),)
        with _children_allowed(), _pool_context().Pool(self.workers, worker_start, initargs) as pool:
            pending: deque = deque()
            try:
                for chunk in chunks:
                    arguments = (chunk, layout, self.job.batch_count, self.stage)
                    pending.append(pool.apply_async(process_chunk_in_worker, arguments))
                    if len(pending) >= window:
                        self._store(pending.popleft().get())
            finally:  # also when the reader stops at a malformed record: the good rows before it are kept
                while pending:
                    self._store(pending.popleft().get())
                pool.close()  # the workers end and close their connections (leaving the block would kill them)
                pool.join()

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

    def _upsert_buckets(self) -> None:
        """Deduplicate and upsert every bucket; buckets already committed by an earlier run are only re-counted."""
        self.job.stage = "writing"
        self._save_progress(force=True)
        done = {entry["bucket"] for entry in self.job.committed_batches or []}
        has_suppressions = self._has_rows(sql.SUPPRESSION)
        self._plain = not self._has_rows(sql.CONTACT)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [sql.CONTACT])
            self._id_sequence = cursor.fetchone()[0]
        jobs = [(bucket, bucket not in done, has_suppressions) for bucket in range(self.job.batch_count)]
        writers = min(self.workers, WRITER_SESSIONS)
        if len(jobs) <= 1 or writers <= 1:
            for job in jobs:
                self._write_bucket(*job)
            return
        # Buckets hold disjoint phones (a phone's duplicates share its bucket), so two sessions never
        # wait on each other's rows.
        with ThreadPoolExecutor(max_workers=writers) as executor:
            for future in [executor.submit(self._write_bucket_in_thread, *job) for job in jobs]:
                future.result()

    def _write_bucket_in_thread(self, bucket: int, upsert: bool, has_suppressions: bool) -> None:
        try:
            self._write_bucket(bucket, upsert, has_suppressions)
        finally:
            connections.close_all()

    @staticmethod
    def _has_rows(table: str) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
            return bool(cursor.fetchone()[0])

    def _write_bucket(self, bucket: int, upsert: bool, has_suppressions: bool) -> None:
        """The bucket's transaction; again through ON CONFLICT if a plain insert met a phone created meanwhile."""
        try:
            self._write_bucket_once(bucket, upsert, has_suppressions, plain_inserts=True)
        except IntegrityError as exc:
            constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
            if constraint != CONTACT_PHONE_KEY:
                raise
            logger.warning(
                "import %s: bucket %s met a contact created meanwhile; writing it again", self.job.pk, bucket
            )
            self._write_bucket_once(bucket, upsert, has_suppressions, plain_inserts=False)

    def _write_bucket_once(self, bucket: int, upsert: bool, has_suppressions: bool, *, plain_inserts: bool) -> None:
        """One transaction: the bucket's duplicate and suppression warnings, then its upsert unless committed."""
        started = time.monotonic()
        stage = sql.stage_bucket(self.stage, bucket)
        params = {
            "bucket": bucket,
            "job": self.job.pk,
            "default": self.options.default_consent,
            "no_consent": sql.NO_CONSENT,
            "actor": (self.job.created_by or "import")[:150],
            "extra_topics": [self.options.topic] if self.options.topic else [],
        }
        with transaction.atomic(), connection.cursor() as cursor:
            # The CTEs' row counts are unknown to the planner; a nested loop over them would be quadratic.
            cursor.execute("SET LOCAL enable_nestloop = off")
            cursor.execute("SET LOCAL jit = off")
            cursor.execute(f"SET LOCAL work_mem = '{WRITER_WORK_MEM}'")
            # No flush wait at commit: a crash can lose only whole, most recent bucket transactions,
            # and the job's record of them with them (same transaction), so a re-run redoes exactly those.
            cursor.execute("SET LOCAL synchronous_commit = off")
            sql.phone_hash_key_set(cursor)
            # Plain inserts: new phones without ON CONFLICT (a whole bucket when the table was empty).
            plain = plain_inserts and self._plain
            warnings = self._prepare_bucket(cursor, stage, params, has_suppressions, plain)
            entry = None
            if upsert:
                cursor.execute(sql.create_pending_events())
                entry = self._upsert_bucket(cursor, stage, params, plain, plain_inserts)
                # Last, so that the chain stays locked only from here to the commit: the other writer
                # session's bucket meanwhile runs its upsert.
                if self._has_any(cursor, sql.has_pending_events()):
                    consent_events_insert(cursor, sql.pending_events(), params)
            self._commit_batch(entry, warnings)
        elapsed = time.monotonic() - started
        logger.debug("import %s: bucket %s written in %.2f s: %s", self.job.pk, bucket, elapsed, entry)

    def _prepare_bucket(self, cursor, stage: str, params: dict, has_suppressions: bool, plain: bool) -> dict[str, int]:
        """Drop in-file duplicates (the last row wins) and mark suppressed phones; return the warning counts."""
        cursor.execute(sql.remove_duplicates(stage), params)
        duplicates = max(cursor.rowcount, 0)
        if not plain:
            # ON CONFLICT looks staged rows up by phone. The index comes before any UPDATE of the stage:
            # built after one (HOT chains in the partition), this transaction could not use it
            # (pg_index.indcheckxmin) and each lookup would read the whole partition. No ANALYZE: the
            # plans need only the partition's row count, which the index build sets; per-column
            # statistics cost 0.4 s a bucket and led to a slower plan for the topics.
            cursor.execute(sql.index_stage(stage))
        missing = suppressed = refused = 0
        if self.options.default_consent is None:
            [(missing,)] = _run_with_nested_loops(cursor, sql.drop_without_consent(stage), params)
        if has_suppressions:
            cursor.execute(sql.mark_suppressed(stage))
            cursor.execute(sql.warn_suppressed(stage), params)
            suppressed = max(cursor.rowcount, 0)
        if not self._plain and self.options.update_existing and self._has_any(cursor, sql.has_opt_ins(stage)):
            # Counted again for a bucket an earlier run committed: its opted-out contacts are still out.
            statement = sql.warn_refused_opt_ins(stage)
            [(refused,)] = _run_with_nested_loops(cursor, statement, {**params, "refused": sql.REFUSED_OPT_IN})
        return {"duplicates": duplicates, "warnings": duplicates + suppressed + refused, "invalid": missing}

    @staticmethod
    def _has_any(cursor, statement: str) -> bool:
        cursor.execute(statement)
        return bool(cursor.fetchone()[0])

    def _upsert_bucket(self, cursor, stage: str, params: dict, plain: bool, plain_inserts: bool) -> dict:
        if plain:
            cursor.execute(sql.insert_new(stage, self._id_sequence), params)
            return self._batch_entry(params["bucket"], *cursor.fetchone())
        # One join of the stage with the contacts: rows that leave their contact as it is (or that are
        # skipped) leave the stage; new phones leave it next, and ON CONFLICT gets the rest.
        [(taken,)] = _run_with_nested_loops(
            cursor, sql.take_existing(stage, update_existing=self.options.update_existing), params
        )
        new = 0
        if plain_inserts:
            cursor.execute(sql.take_new(stage, self._id_sequence), params)
            [new] = cursor.fetchone()
        cursor.execute(sql.upsert(stage, update_existing=self.options.update_existing), params)
        staged, created, changed = cursor.fetchone()
        # A row the upsert declined although it was not taken above: its contact changed meanwhile.
        if self.options.update_existing and staged > created + changed and self._has_topics(params):
            cursor.execute(sql.add_topics_to_unchanged(stage), params)
        return self._batch_entry(params["bucket"], taken + new + staged, created + new, changed)

    def _has_topics(self, params: dict) -> bool:
        return bool(self._topics or params["extra_topics"])

    def _batch_entry(self, bucket: int, staged: int, created: int, changed: int) -> dict:
        rest = staged - created - changed
        return {
            "bucket": bucket,
            "rows": staged,
            "created": created,
            "updated": changed,
            "unchanged": rest if self.options.update_existing else 0,
            "skipped": 0 if self.options.update_existing else rest,
            "at": timezone.now().isoformat(),
        }

    def _commit_batch(self, entry: dict | None, warnings: dict[str, int]) -> None:
        with self._lock:
            self.job.duplicate_count += warnings["duplicates"]
            self.job.warning_count += warnings["warnings"]
            self.job.invalid_count += warnings["invalid"]
            counts = {
                "duplicate_count": self.job.duplicate_count,
                "warning_count": self.job.warning_count,
                "invalid_count": self.job.invalid_count,
            }
            if entry is None:
                ImportJob.objects.filter(pk=self.job.pk).update(heartbeat_at=timezone.now(), **counts)
                return
            job = ImportJob.objects.select_for_update().get(pk=self.job.pk)
            job.committed_batches = [*job.committed_batches, entry]
            self.job.committed_batches = job.committed_batches
            share = (100.0 - READ_SHARE - 2) * len(job.committed_batches) / max(self.job.batch_count, 1)
            ImportJob.objects.filter(pk=job.pk).update(
                committed_batches=job.committed_batches,
                created_count=F("created_count") + entry["created"],
                updated_count=F("updated_count") + entry["updated"],
                unchanged_count=F("unchanged_count") + entry["unchanged"],
                skipped_count=F("skipped_count") + entry["skipped"],
                progress=min(99.0, READ_SHARE + 2 + share),
                heartbeat_at=timezone.now(),
                **counts,
            )

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
