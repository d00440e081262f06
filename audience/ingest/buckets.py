"""Phase 3 of an import: each bucket of staged rows written in one transaction, committed with its record.

Set-based SQL (audience.ingest.sql) drops the bucket's in-file duplicates (the last row wins) and
marks suppressed phones. When the contacts table was empty at the start, one plain INSERT with ids
from the sequence writes the bucket's contacts, and its CTEs their ContactTopic rows and pending
consent events. Otherwise one join with the contacts takes out the rows that would change nothing,
the rows with new phones are inserted plainly in the same way, and the rest go through one
``INSERT ... SELECT ... ON CONFLICT (phone) DO UPDATE``. The pending consent events are then chained
into the audit (audience.consent_chain: the chain's lock is held from there to the commit); the same
transaction records the bucket as committed on the job.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.db import IntegrityError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone
from psycopg import sql as pgsql

from audience.consent_chain import consent_events_insert
from audience.ingest import sql, sql_upsert
from audience.ingest.options import IngestOptions
from audience.models import ImportJob

logger = logging.getLogger(__name__)

WRITER_SESSIONS = 2
WRITER_WORK_MEM = "64MB"  # the bucket's CTEs and sorts stay in memory instead of spilling to temp files
CONTACT_PHONE_KEY = "audience_contact_phone_key"  # the unique constraint on Contact.phone
READ_SHARE = 80.0  # percent of the progress bar for reading and validating (the engine's phase 1)


def run_with_nested_loops(cursor, statement: str, params: dict | None = None) -> list[tuple] | None:
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


class BucketWriter:
    """Writes an import's buckets; ``job``'s counts are updated as each bucket commits."""

    def __init__(self, job: ImportJob, options: IngestOptions, stage: str, *, topics: set[str], workers: int):
        self.job = job
        self.options = options
        self.stage = stage
        self.topics = topics  # the file's topics, all known before the first bucket
        self.workers = workers
        self._lock = threading.Lock()
        self._plain = False  # the contacts table was empty when the write began
        self._id_sequence = ""

    def write_all(self) -> None:
        """Deduplicate and upsert every bucket; buckets already committed by an earlier run are only re-counted."""
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
            cursor.execute(pgsql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(pgsql.Identifier(table)))
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
            **sql.ENUMS,
        }
        with transaction.atomic(), connection.cursor() as cursor:
            # The CTEs' row counts are unknown to the planner; a nested loop over them would be quadratic.
            cursor.execute("SET LOCAL enable_nestloop = off")
            cursor.execute("SET LOCAL jit = off")
            cursor.execute("SELECT set_config('work_mem', %(work_mem)s, true)", {"work_mem": WRITER_WORK_MEM})
            # No flush wait at commit: a crash can lose only whole, most recent bucket transactions,
            # and the job's record of them with them (same transaction), so a re-run redoes exactly those.
            cursor.execute("SET LOCAL synchronous_commit = off")
            sql.phone_hash_key_set(cursor)
            # Plain inserts: new phones without ON CONFLICT (a whole bucket when the table was empty).
            plain = plain_inserts and self._plain
            warnings = self._prepare_bucket(cursor, stage, params, has_suppressions, plain)
            entry = None
            if upsert:
                cursor.execute(sql_upsert.create_pending_events())
                entry = self._upsert_bucket(cursor, stage, params, plain, plain_inserts)
                # Last, so that the chain stays locked only from here to the commit: the other writer
                # session's bucket meanwhile runs its upsert.
                if self._has_any(cursor, sql_upsert.has_pending_events()):
                    consent_events_insert(cursor, sql_upsert.pending_events(), params)
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
            [(missing,)] = run_with_nested_loops(cursor, sql.drop_without_consent(stage), params)
        if has_suppressions:
            cursor.execute(sql.mark_suppressed(stage))
            cursor.execute(sql.warn_suppressed(stage), params)
            suppressed = max(cursor.rowcount, 0)
        if not self._plain and self.options.update_existing and self._has_any(cursor, sql.has_opt_ins(stage), params):
            # Counted again for a bucket an earlier run committed: its opted-out contacts are still out.
            statement = sql.warn_refused_opt_ins(stage)
            [(refused,)] = run_with_nested_loops(cursor, statement, {**params, "refused": sql.REFUSED_OPT_IN})
        return {"duplicates": duplicates, "warnings": duplicates + suppressed + refused, "invalid": missing}

    @staticmethod
    def _has_any(cursor, statement: str, params: dict | None = None) -> bool:
        cursor.execute(statement, params)
        return bool(cursor.fetchone()[0])

    def _upsert_bucket(self, cursor, stage: str, params: dict, plain: bool, plain_inserts: bool) -> dict:
        if plain:
            cursor.execute(sql_upsert.insert_new(stage, self._id_sequence), params)
            return self._batch_entry(params["bucket"], *cursor.fetchone())
        # One join of the stage with the contacts: rows that leave their contact as it is (or that are
        # skipped) leave the stage; new phones leave it next, and ON CONFLICT gets the rest.
        [(taken,)] = run_with_nested_loops(
            cursor, sql_upsert.take_existing(stage, update_existing=self.options.update_existing), params
        )
        new = 0
        if plain_inserts:
            cursor.execute(sql_upsert.take_new(stage, self._id_sequence), params)
            [new] = cursor.fetchone()
        cursor.execute(sql_upsert.upsert(stage, update_existing=self.options.update_existing), params)
        staged, created, changed = cursor.fetchone()
        # A row the upsert declined although it was not taken above: its contact changed meanwhile.
        if self.options.update_existing and staged > created + changed and self._has_topics(params):
            cursor.execute(sql_upsert.add_topics_to_unchanged(stage), params)
        return self._batch_entry(params["bucket"], taken + new + staged, created + new, changed)

    def _has_topics(self, params: dict) -> bool:
        return bool(self.topics or params["extra_topics"])

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
