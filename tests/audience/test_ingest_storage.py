"""How the engine uses the database: a staging partition per bucket, session settings that do not leak, lean indexes."""

import pytest
from django.db import connection, transaction

from audience.ingest import buckets as buckets_module
from audience.ingest import engine as engine_module
from audience.ingest import sql, sql_upsert
from audience.models import ConsentEvent, Contact, ContactTopic, Suppression, Topic
from audience.phones import phone_hash
from tests.ingest import ingest, write

pytestmark = pytest.mark.django_db(transaction=True)


def _tables_like(pattern: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relname LIKE %s", [pattern])
        return sorted(row[0] for row in cursor.fetchall())


def _indexes_of(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
        return {row[0] for row in cursor.fetchall()}


def test_each_bucket_upsert_reads_its_own_staging_partition_and_all_are_dropped_after(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "BUCKET_THRESHOLD_BYTES", 0)
    original = buckets_module.BucketWriter._upsert_bucket
    seen: dict[int, tuple[int, list[int]]] = {}

    def spy(self, cursor, stage, params, *flags):
        bucket = params["bucket"]
        assert stage == sql.stage_bucket(self.stage, bucket)
        cursor.execute(f"SELECT count(*), array_agg(DISTINCT bucket) FROM {stage}")
        seen[bucket] = cursor.fetchone()
        return original(self, cursor, stage, params, *flags)

    monkeypatch.setattr(buckets_module.BucketWriter, "_upsert_bucket", spy)
    lines = "".join(f"+2547120{index:05d},n{index}\n" for index in range(300))
    job = ingest(write(tmp_path, "parts.csv", "phone,name\n" + lines))

    assert job.batch_count == 8 and sorted(seen) == list(range(8))
    assert all(buckets == [bucket] for bucket, (_, buckets) in seen.items() if buckets)
    assert sum(count for count, _ in seen.values()) == 300 == Contact.objects.count()
    assert _tables_like(f"audience_ingest_stage_{job.pk}%") == []


def test_duplicates_across_the_file_are_still_resolved_in_a_partitioned_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "BUCKET_THRESHOLD_BYTES", 0)
    content = "phone,name\n+254712345678,first\n+254712345679,other\nwhatsapp:+254712345678,last\n"
    job = ingest(write(tmp_path, "dups.csv", content))
    assert Contact.objects.get(phone="+254712345678").name == "last"
    assert job.duplicate_count == 1 and ConsentEvent.objects.count() == 2


def test_the_import_does_not_leave_its_session_settings_on_the_connection(tmp_path):
    ingest(write(tmp_path, "one.csv", "phone\n+254712345678\n"))
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        synchronous_commit = cursor.fetchone()[0]
        cursor.execute("SHOW enable_nestloop")
        nestloop = cursor.fetchone()[0]
    assert (synchronous_commit, nestloop) == ("on", "on")


def test_the_unused_pattern_indexes_are_gone_and_the_equality_indexes_stay():
    contact_indexes = _indexes_of("audience_contact")
    event_indexes = _indexes_of("audience_consentevent")
    assert not [name for name in contact_indexes | event_indexes if name.endswith("_like")]
    assert "audience_contact_phone_key" in contact_indexes
    assert any("phone_hash" in name for name in event_indexes)


def test_contact_topics_keep_only_the_two_composite_indexes_that_serve_both_directions():
    assert _indexes_of("audience_contacttopic") == {
        "audience_contacttopic_pkey",
        "contact_topic_unique",
        "contact_topic_by_topic",
    }


def test_deleting_a_topic_removes_its_links_without_a_database_constraint(tmp_path):
    ingest(write(tmp_path, "t.csv", "phone,topics\n+254712345678,vip|news\n+254712345679,vip\n"))
    Topic.objects.get(name="vip").delete()
    assert sorted(ContactTopic.objects.values_list("topic__name", flat=True)) == ["news"]


def test_a_small_file_finds_its_contacts_by_probing_the_phone_index_not_by_reading_every_contact():
    """A small file into a big table: the cost must follow the file, not the contacts table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audience_contact (phone, channel, name, email, locale, timezone, attributes,"
            " consent_status, created_at, updated_at)"
            " SELECT '+2547' || lpad(n::text, 8, '0'), 'sms', '', '', 'en', '', '{}', 'opted_in', now(), now()"
            " FROM generate_series(1, 200000) AS n"
        )
        cursor.execute("ANALYZE audience_contact")
        for statement in sql.create_stage("audience_ingest_stage_plan", 1):
            cursor.execute(statement)
        stage = sql.stage_bucket("audience_ingest_stage_plan", 0)
        cursor.execute(f"INSERT INTO {stage} (line, bucket, phone) VALUES (2, 0, '+254700000001')")
        cursor.execute(sql.index_stage(stage))
        params = {"extra_topics": [], "default": "opted_in", **sql.ENUMS}
        with transaction.atomic():  # the planner settings are SET LOCAL
            cursor.execute("SET LOCAL enable_nestloop = off")  # as the bucket's transaction has it
            explain = "EXPLAIN " + sql_upsert.take_existing(stage, update_existing=True)
            plan = "\n".join(row[0] for row in buckets_module.run_with_nested_loops(cursor, explain, params))
        cursor.execute(sql.drop_stage("audience_ingest_stage_plan"))
    assert "Index Scan using audience_contact_phone_key" in plan
    assert "Seq Scan on audience_contact " not in plan


def test_the_upsert_finds_each_staged_row_through_the_stage_index(tmp_path, monkeypatch):
    """ON CONFLICT looks each staged row up by phone, through the index built before any UPDATE of the stage.

    Built after an UPDATE (take_existing's, or marking suppressed phones) had HOT-updated rows,
    the index was unusable to its own transaction (pg_index.indcheckxmin) and each lookup read the
    whole partition: a second
    1M-row list took 260 s instead of 20. A small file rarely leaves a page with room for a HOT
    update, so the order of the statements is checked as well as the plan.
    """
    phones = [f"+2547120{index:05d}" for index in range(2000)]
    ingest(write(tmp_path, "first.csv", "phone,name\n" + "".join(f"{phone},old\n" for phone in phones)))
    plans: list[str] = []
    statements: list[str] = []
    original = buckets_module.BucketWriter._upsert_bucket

    class ExplainingCursor:
        def __init__(self, cursor):
            self.cursor = cursor

        def __getattr__(self, name):
            return getattr(self.cursor, name)

        def execute(self, statement, params=None):
            statements.append(statement)
            if "DO UPDATE" in statement:
                self.cursor.execute("EXPLAIN " + statement, params)
                plans.append("\n".join(row[0] for row in self.cursor.fetchall()))
            return self.cursor.execute(statement, params)

    def spy(self, cursor, stage, params, *flags):
        return original(self, ExplainingCursor(cursor), stage, params, *flags)

    def prepare_spy(self, cursor, stage, params, *flags):
        return original_prepare(self, ExplainingCursor(cursor), stage, params, *flags)

    original_prepare = buckets_module.BucketWriter._prepare_bucket
    monkeypatch.setattr(buckets_module.BucketWriter, "_upsert_bucket", spy)
    monkeypatch.setattr(buckets_module.BucketWriter, "_prepare_bucket", prepare_spy)
    # A suppressed phone in the file: marking it is the stage's first UPDATE.
    Suppression.objects.create(phone_hash=phone_hash(phones[7]), reason="erased", source="admin")
    changed = "".join(f"{phone},new\n" for phone in phones) + "+254712399999,brand new\n"
    job = ingest(write(tmp_path, "second.csv", "phone,name\n" + changed))

    assert (job.updated_count, job.created_count) == (2000, 1)
    assert Contact.objects.filter(name="new").count() == 2000
    [plan] = plans
    assert "SubPlan" in plan and "Index Scan using audience_ingest_stage_" in plan
    assert "Seq Scan on audience_ingest_stage_" not in plan.split("SubPlan", 1)[1]
    updates = [n for n, text in enumerate(statements) if "UPDATE audience_ingest_stage_" in text]
    first_index = next(n for n, text in enumerate(statements) if text.startswith("CREATE UNIQUE INDEX"))
    assert len(updates) == 2 and first_index < updates[0]  # marking the suppressed phone, take_existing


def test_a_row_the_upsert_declined_still_gets_its_topics_and_the_jobs():
    """The path for a contact that changed between take_existing and the upsert: its topics are still added."""
    contact = Contact.objects.create(phone="+254712345678", name="A")
    Topic.objects.bulk_create([Topic(name="vip"), Topic(name="job")])
    with connection.cursor() as cursor:
        for statement in sql.create_stage("audience_ingest_stage_topics", 1):
            cursor.execute(statement)
        stage = sql.stage_bucket("audience_ingest_stage_topics", 0)
        cursor.execute(f"INSERT INTO {stage} (line, bucket, phone, topics) VALUES (2, 0, '+254712345678', '{{vip}}')")
        cursor.execute(f"INSERT INTO {stage} (line, bucket, phone) VALUES (3, 0, '+254700000009')")  # no contact
        cursor.execute(sql_upsert.add_topics_to_unchanged(stage), {"bucket": 0, "extra_topics": ["job"]})
        cursor.execute(sql_upsert.add_topics_to_unchanged(stage), {"bucket": 0, "extra_topics": ["job"]})  # idempotent
        cursor.execute(sql.drop_stage("audience_ingest_stage_topics"))
    assert sorted(contact.topics.values_list("name", flat=True)) == ["job", "vip"]
    assert ContactTopic.objects.count() == 2
