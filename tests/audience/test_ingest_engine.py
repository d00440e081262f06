"""Semantics of the ingest engine: upsert, merge, consent audit, suppression, options, resume, streaming."""

import random
import threading
import time
import tracemalloc

import psycopg
import pytest
from django.db import connection, connections, transaction

from audience import services
from audience.ingest import buckets as buckets_module
from audience.ingest import engine as engine_module
from audience.ingest import services as ingest_services
from audience.ingest import validate
from audience.ingest.engine import inspect_file, iter_chunks
from audience.ingest.readers import iter_csv_chunks
from audience.models import (
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    Contact,
    ImportJob,
    ImportRowError,
    ImportStatus,
    Suppression,
)
from audience.phones import phone_hash
from tests.ingest import ingest, problems, write

pytestmark = pytest.mark.django_db(transaction=True)


def _contact(phone="+254712345678", **fields) -> Contact:
    return services.contact_create(phone=phone, source=ConsentSource.API, **fields)


def test_new_contacts_get_fields_typed_attributes_topics_and_an_import_consent_event(tmp_path):
    content = (
        "phone,name,channel,timezone,topics,age,score,vip,zip\n"
        "+254712345678,Amina,WhatsApp,Africa/Nairobi,Alerts|vip,31,4.5,true,02134\n"
    )
    job = ingest(write(tmp_path, "new.csv", content), topic="imported")
    contact = Contact.objects.get()
    assert (contact.name, contact.channel, contact.timezone) == ("Amina", "whatsapp", "Africa/Nairobi")
    assert contact.attributes == {"age": 31, "score": 4.5, "vip": True, "zip": "02134"}
    assert sorted(contact.topics.values_list("name", flat=True)) == ["alerts", "imported", "vip"]
    assert contact.consent_status == ConsentStatus.OPTED_IN and contact.opted_in_at is not None
    event = ConsentEvent.objects.get(contact=contact)
    assert (event.from_status, event.to_status, event.source) == ("", "opted_in", "import")
    assert event.phone_hash == phone_hash(contact.phone)
    assert event.evidence == {"import_job": job.pk, "line": 2}


def test_existing_contacts_are_updated_attributes_merged_and_empty_cells_keep_values(tmp_path):
    contact = _contact(name="Old", email="old@example.com", channel="whatsapp", attributes={"age": 30, "city": "Nbi"})
    job = ingest(write(tmp_path, "upd.csv", "phone,name,email,channel,age,vip\n+254712345678,New,,,31,false\n"))
    contact.refresh_from_db()
    assert (contact.name, contact.email, contact.channel) == ("New", "old@example.com", "whatsapp")
    assert contact.attributes == {"age": 31, "city": "Nbi", "vip": False}
    assert (job.created_count, job.updated_count) == (0, 1)
    assert ConsentEvent.objects.filter(contact=contact).count() == 1  # only the creation: consent did not change


def test_a_rerun_of_the_same_file_changes_nothing(tmp_path):
    path = write(tmp_path, "same.csv", "phone,name,topics\n+254712345678,A,news\n+254712345679,B,\n")
    ingest(path)
    again = ingest(path)
    assert (again.created_count, again.updated_count, again.unchanged_count) == (0, 0, 2)
    assert ConsentEvent.objects.count() == 2


def test_a_reimport_mixing_unchanged_changed_and_new_rows_touches_only_what_changes(tmp_path):
    ingest(write(tmp_path, "a.csv", "phone,name\n+254712345678,A\n+254712345679,B\n"))
    before = dict(Contact.objects.values_list("phone", "updated_at"))
    content = "phone,name,topics\n+254712345678,A,vip\n+254712345679,Bee,\n+254712345670,C,\n"
    job = ingest(write(tmp_path, "b.csv", content))
    assert (job.created_count, job.updated_count, job.unchanged_count) == (1, 1, 1)
    unchanged = Contact.objects.get(phone="+254712345678")
    assert unchanged.updated_at == before["+254712345678"]  # not rewritten
    assert [topic.name for topic in unchanged.topics.all()] == ["vip"]  # but it gains the file's topic
    changed = Contact.objects.get(phone="+254712345679")
    assert changed.name == "Bee" and changed.updated_at > before["+254712345679"]
    assert sum(entry["rows"] for entry in job.committed_batches) == 3


def test_a_consent_change_in_the_file_is_audited(tmp_path):
    contact = _contact()
    job = ingest(write(tmp_path, "out.csv", "phone,consent\n+254712345678,unsubscribed\n"))
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_OUT and contact.opted_out_at is not None
    event = ConsentEvent.objects.filter(contact=contact).latest("id")
    assert (event.from_status, event.to_status, event.source, event.actor) == (
        "opted_in",
        "opted_out",
        "import",
        "tester",
    )
    assert event.evidence["import_job"] == job.pk


def test_an_import_never_opts_back_in_a_contact_who_opted_out(tmp_path):
    contact = _contact(name="Ann")
    services.consent_change(contact, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD, actor="STOP")
    content = "phone,name,consent\n+254712345678,Anne,opted_in\n+254712345679,Bo,opted_in\n"
    job = ingest(write(tmp_path, "in.csv", content))

    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_OUT and contact.name == "Anne"  # the rest still applies
    assert list(ConsentEvent.objects.filter(contact=contact).values_list("source", flat=True)) == ["keyword", "api"]
    assert Contact.objects.get(phone="+254712345679").consent_status == ConsentStatus.OPTED_IN
    [(line, column, reason)] = problems(job, "warning")
    assert (line, column) == (2, "consent")
    assert f"opted out on {contact.opted_out_at:%Y-%m-%d}" in reason and "does not opt them back in" in reason
    assert (job.warning_count, job.updated_count, job.created_count) == (1, 1, 1)

    again = ingest(write(tmp_path, "again.csv", "phone,consent\n+254712345678,yes\n"))
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_OUT
    assert (again.warning_count, again.unchanged_count) == (1, 1)


def test_default_consent_applies_to_new_contacts_only(tmp_path):
    _contact()
    ingest(write(tmp_path, "d.csv", "phone\n+254712345678\n+254712345679\n"), default_consent="opted_out")
    assert Contact.objects.get(phone="+254712345678").consent_status == ConsentStatus.OPTED_IN
    assert Contact.objects.get(phone="+254712345679").consent_status == ConsentStatus.OPTED_OUT


def test_a_suppressed_phone_is_never_opted_in_by_an_import(tmp_path):
    Suppression.objects.create(phone_hash=phone_hash("+254712345678"), reason="erased", source=ConsentSource.ADMIN)
    job = ingest(write(tmp_path, "s.csv", "phone,consent\n+254712345678,opted_in\n"))
    contact = Contact.objects.get()
    assert contact.consent_status == ConsentStatus.OPTED_OUT
    assert ConsentEvent.objects.get(contact=contact).evidence["suppressed"] is True
    [(line, column, reason)] = problems(job, "warning")
    assert (line, column) == (2, "phone") and "suppression list" in reason


def test_skip_existing_leaves_existing_contacts_untouched(tmp_path):
    contact = _contact(name="Keep")
    job = ingest(
        write(tmp_path, "skip.csv", "phone,name\n+254712345678,Changed\n+254712345679,New\n"),
        update_existing=False,
        topic="promo",
    )
    contact.refresh_from_db()
    assert contact.name == "Keep" and not contact.topics.exists()
    assert Contact.objects.get(phone="+254712345679").topics.get().name == "promo"
    assert (job.created_count, job.skipped_count, job.updated_count) == (1, 1, 0)


def test_a_topic_is_added_to_unchanged_existing_contacts_too(tmp_path):
    path = write(tmp_path, "t.csv", "phone\n+254712345678\n")
    ingest(path)
    job = ingest(path, topic="later")
    assert job.unchanged_count == 1
    assert Contact.objects.get().topics.get().name == "later"


def test_a_changed_existing_contact_gains_new_topics_and_keeps_the_ones_it_had(tmp_path):
    ingest(write(tmp_path, "first.csv", "phone,name,topics\n+254712345678,Ann,alerts\n"))
    job = ingest(
        write(tmp_path, "second.csv", "phone,name,topics\n+254712345678,Anne,alerts|vip\n+254712345679,Bo,vip\n")
    )
    assert (job.created_count, job.updated_count, job.invalid_count) == (1, 1, 0)
    assert sorted(Contact.objects.get(phone="+254712345678").topics.values_list("name", flat=True)) == ["alerts", "vip"]
    assert list(Contact.objects.get(phone="+254712345679").topics.values_list("name", flat=True)) == ["vip"]


@pytest.mark.parametrize("first_import", [True, False])
def test_a_contact_created_by_another_session_during_an_import_is_updated_not_duplicated(
    tmp_path, caplog, first_import
):
    """New phones are inserted plainly; a phone committed meanwhile sends the bucket through ON CONFLICT.

    A first import inserts its whole bucket so (insert_new); a later one its rows with no contact (take_new).
    """
    if not first_import:
        _contact(phone="+254712345670", name="Already here")
    path = write(tmp_path, "race.csv", "phone,name\n+254712345678,From file\n+254712345679,New\n")
    created, release = threading.Event(), threading.Event()

    def other_session():
        try:
            with transaction.atomic():
                Contact.objects.create(phone="+254712345678", name="Other session")
                created.set()
                release.wait(30)
        finally:
            connections.close_all()

    def release_when_the_import_waits_on_it():
        # Autocommit: pg_stat_activity is read once a transaction.
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as watcher:
            for _ in range(600):
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE '%src AS MATERIALIZED%'"
                ).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
        release.set()  # the import's INSERT waits for the other transaction's phone: let that one commit

    other = threading.Thread(target=other_session)
    other.start()
    assert created.wait(10)
    watcher = threading.Thread(target=release_when_the_import_waits_on_it)
    watcher.start()
    with caplog.at_level("WARNING", logger="audience.ingest.buckets"):
        job = ingest(path)
    other.join(10)
    watcher.join(10)
    assert any("created meanwhile" in record.getMessage() for record in caplog.records)
    assert (job.status, job.created_count, job.updated_count) == (ImportStatus.SUCCEEDED, 1, 1)
    assert Contact.objects.get(phone="+254712345678").name == "From file"
    assert Contact.objects.count() == (2 if first_import else 3)


def test_json_array_and_jsonl_give_the_same_result_as_csv(tmp_path):
    rows = '{"phone": "+254712345678", "name": "A", "attributes": {"age": 3}, "topics": ["x"]}'
    ingest(write(tmp_path, "a.json", f"[{rows}]"))
    from_json = list(Contact.objects.values_list("phone", "name", "attributes"))
    Contact.objects.all().delete()
    ingest(write(tmp_path, "a.csv", "phone,name,age,topics\n+254712345678,A,3,x\n"))
    assert list(Contact.objects.values_list("phone", "name", "attributes")) == from_json


def test_the_pool_of_worker_processes_gives_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "BUCKET_THRESHOLD_BYTES", 0)
    lines = "".join(f"+2547120{index:05d},n{index}\n" for index in range(3000))
    sessions_before = _sessions_on_this_database()
    job = ingest(write(tmp_path, "pool.csv", "phone,name\n" + lines + "bad,x\n"), workers=2)
    assert job.batch_count == 8 and len(job.committed_batches) == 8
    assert Contact.objects.count() == 3000 and job.invalid_count == 1
    assert problems(job, "error")[0][0] == 3002
    assert job.details["seconds"]["read"] > 0
    # The workers COPYed through connections of their own and closed them when the pool ended
    # (a server process takes a moment to go once its client said goodbye).
    deadline = time.monotonic() + 5
    while _sessions_on_this_database() > sessions_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sessions_on_this_database() == sessions_before


def _sessions_on_this_database() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_a_crashed_job_keeps_its_committed_batches_and_a_rerun_finishes_without_double_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "BUCKET_THRESHOLD_BYTES", 0)
    lines = "".join(f"+2547120{index:05d}\n" for index in range(400))
    repeats = "".join(f"+2547120{index:05d}\n" for index in range(0, 400, 20))  # 20 duplicates in all buckets
    path = write(tmp_path, "crash.csv", "phone\n" + lines + repeats)
    original = buckets_module.BucketWriter._upsert_bucket

    def crash_on_bucket_5(self, cursor, stage, params, *flags):
        if params["bucket"] == 5:
            raise ConnectionError("database went away")
        return original(self, cursor, stage, params, *flags)

    monkeypatch.setattr(buckets_module.BucketWriter, "_upsert_bucket", crash_on_bucket_5)
    with pytest.raises(ConnectionError):
        ingest(path)
    job = ImportJob.objects.get()
    assert job.status == ImportStatus.FAILED and "re-run" in job.error
    committed = {entry["bucket"] for entry in job.committed_batches}
    assert committed == {0, 1, 2, 3, 4}
    assert Contact.objects.count() == sum(entry["rows"] for entry in job.committed_batches) > 0

    monkeypatch.setattr(buckets_module.BucketWriter, "_upsert_bucket", original)
    ingest_services.import_job_retry(job)
    job = ingest_services.import_job_run(ingest_services.import_job_claim(job.pk), workers=1)
    assert job.status == ImportStatus.SUCCEEDED
    assert sorted(entry["bucket"] for entry in job.committed_batches) == list(range(8))
    assert Contact.objects.count() == 400 == job.created_count
    assert ConsentEvent.objects.count() == 400
    # The re-run re-counts the duplicates of the buckets it did not upsert again.
    assert job.duplicate_count == 20 == ImportRowError.objects.filter(job=job, reason__startswith="duplicate").count()


def test_a_job_cannot_be_claimed_twice():
    job = ImportJob.objects.create(source="api", file_path="x", file_name="x.csv", status=ImportStatus.QUEUED)
    assert ingest_services.import_job_claim(job.pk) is not None
    assert ingest_services.import_job_claim(job.pk) is None


def test_a_big_file_is_streamed_in_chunks_not_loaded_whole(tmp_path, monkeypatch):
    monkeypatch.setattr("audience.ingest.readers.CHUNK_BYTES", 64 * 1024)
    rows = "".join(f"+2547{index:08d},{'x' * 60},{index}\n" for index in range(10_000, 40_000))
    path = write(tmp_path, "big.csv", "phone,name,n\n" + rows)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        job = ingest(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert job.total_rows == 30_000 and job.invalid_count == 0
    assert peak < size / 2, f"peak {peak} bytes for a {size}-byte file"


CELLS = {
    "phone": [
        "+254712345678",
        " whatsapp:+254 712 345 679",
        "00447400123456",
        "0712345678",
        "",
        " ",
        "abc",
        "+1 (212) 555-0100",
    ],
    "name": ["Amina", "", "  Bob  ", "=cmd|' /C calc'!A0", "-5", "a" * 201, "tab\there", "back\\slash", "two\nlines"],
    "email": ["", "a@example.org", "bad@", "=x@y.z"],
    "channel": ["", "WhatsApp", "sms", "fax", " SMS "],
    "locale": ["", "en", "sw-KE", "x" * 17],
    "timezone": ["", "Africa/Nairobi", "Mars/Olympus", " UTC "],
    "consent": ["", "yes", "OUT", "maybe", " ", "opted_in"],
    "topics": ["", "vip|news", "Bad Topic", "a,b;c", " | "],
    "age": ["31", "4.50", "true", "", "=1+1", "+254", "-3", "text \\ here", "07", "1e5", "-"],
    "note": ["", "plain", "@SUM(A1)", "x\ty"],
}


def test_cells_settled_once_a_chunk_give_what_each_row_alone_gives(tmp_path):
    """RowValidator keeps what each distinct cell came to for the rest of its chunk; a row read alone agrees."""
    rng = random.Random(5)
    import csv

    path = tmp_path / "mixed.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CELLS)
        for _ in range(3000):
            writer.writerow([rng.choice(values) for values in CELLS.values()])
        writer.writerow(["+254712345670"])  # a short record
    layout = inspect_file(str(path), "csv")

    def outcome(chunks):
        results = [validate.process_chunk(chunk, layout, 8) for chunk in chunks]
        lines = b"".join(result.copy_data for result in results)
        problems = [problem for result in results for problem in result.problems]
        counts = [sum(getattr(result, name) for result in results) for name in ("rows", "valid", "invalid", "warnings")]
        return lines, problems, counts, set().union(*(result.topics for result in results))

    together = outcome(iter_chunks(str(path), layout)[0])
    alone = outcome(iter_csv_chunks(str(path), layout, chunk_bytes=1))  # one record a chunk

    assert together == alone
    assert together[2][1] > 100 and len(together[1]) > 1000
