"""The consent audit is a hash chain: consent_verify finds every event edited, inserted or deleted behind its back."""

import hashlib
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor

from audience import services
from audience.consent_chain import GENESIS, consent_chain_verify
from audience.models import ConsentEvent, ConsentSource, ConsentStatus, Contact, Suppression
from tests.ingest import ingest, write

EVIDENCE = {"document": "signed form SF-7", "reason": "signed up again at the shop"}


def _history() -> None:
    """Events of every kind and door: creations, keyword and provider opt-outs, an override, a lift, an erasure."""
    amina = services.contact_create(phone="+254712345601", source=ConsentSource.API, actor="staff")
    services.consent_change(amina, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD, evidence={"k": 1})
    services.consent_change(
        amina, to_status=ConsentStatus.OPTED_IN, source=ConsentSource.API, actor="staff", evidence=EVIDENCE
    )
    baraka = services.contact_create(phone="+254712345602", source=ConsentSource.ADMIN, actor="boss")
    services.consent_change(baraka, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.PROVIDER)
    services.contact_erase(baraka, actor="boss")  # suppressed, its events erased
    services.suppression_lift(Suppression.objects.get(), actor="boss", evidence=EVIDENCE)
    services.contact_create(phone="+254712345603", consent_status=ConsentStatus.OPTED_OUT, actor="staff")


def _verify(*args) -> tuple[bool, str]:
    """Run the command; (whether it passed, what it wrote)."""
    from io import StringIO

    out, err = StringIO(), StringIO()
    try:
        call_command("consent_verify", *args, stdout=out, stderr=err)
    except CommandError as exc:
        assert exc.returncode == 1
        return False, err.getvalue() + str(exc)
    return True, out.getvalue()


def _sql(statement: str, params=None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _event_at(seq: int) -> ConsentEvent:
    return ConsentEvent.objects.get(seq=seq)


@pytest.mark.django_db
def test_each_event_is_sealed_to_the_one_before_it():
    _history()
    rows = _sql(
        "SELECT seq, chain_hash, audience_consent_entry(seq, id, kind, created_at, from_status, to_status, source, "
        "actor, personal_digest) FROM audience_consentevent ORDER BY seq"
    )
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1)) and len(rows) == 8
    previous = GENESIS
    for _, chain_hash, entry in rows:
        assert bytes(chain_hash) == hashlib.sha256(previous + entry.encode()).digest()
        previous = bytes(chain_hash)
    passed, output = _verify()
    assert passed, output
    assert f"8 events, 2 with personal data erased as recorded; head 8:{previous.hex()}" in output


@pytest.mark.django_db
def test_an_edited_event_is_named():
    _history()
    target = _event_at(2)  # the STOP
    _sql("UPDATE audience_consentevent SET source = 'admin' WHERE id = %s", [target.pk])
    passed, output = _verify()
    assert not passed
    assert f"event {target.pk} at position 2: does not match its hash" in output
    assert "position 3" not in output  # the next event still follows the stored hash


@pytest.mark.django_db
def test_edited_evidence_is_named_though_the_chain_links_hold():
    _history()
    target = _event_at(3)  # the override: its document
    _sql('UPDATE audience_consentevent SET evidence = evidence || \'{"document": "none"}\' WHERE id = %s', [target.pk])
    passed, output = _verify()
    assert not passed
    assert (
        f"event {target.pk} at position 3: its contact, phone hash or evidence changed after it was written" in output
    )


@pytest.mark.django_db
def test_blanking_evidence_without_an_erasure_is_named():
    _history()
    target = _event_at(1)
    _sql("UPDATE audience_consentevent SET evidence = '{}', contact_id = NULL WHERE id = %s", [target.pk])
    passed, output = _verify()
    assert not passed and f"event {target.pk} at position 1: its contact" in output


@pytest.mark.django_db
def test_a_deleted_event_is_named_by_its_position():
    _history()
    gone, after = _event_at(4), _event_at(5)
    _sql("DELETE FROM audience_consentevent WHERE id = %s", [gone.pk])
    passed, output = _verify()
    assert not passed
    assert f"position 4 missing before event {after.pk} at position 5: event(s) deleted" in output
    assert f"event {after.pk} at position 5: does not match its hash" in output


@pytest.mark.django_db
def test_an_event_inserted_into_the_middle_is_found_even_with_a_hash_of_its_own():
    """A forger renumbers the events after position 3 and seals a fake STOP there with the right formula."""
    _history()
    follower = _event_at(4)
    _sql("UPDATE audience_consentevent SET seq = -seq WHERE seq > 3")
    _sql("UPDATE audience_consentevent SET seq = -seq + 1 WHERE seq < 0")
    _sql(
        """
        WITH fake AS (
            SELECT nextval(pg_get_serial_sequence('audience_consentevent', 'id')) AS id, 4 AS seq, c.id AS contact_id,
                   e.phone_hash, now() AS created_at, e.chain_hash AS previous,
                   audience_consent_personal_digest(c.id, e.phone_hash, '{}') AS digest
            FROM audience_consentevent e JOIN audience_contact c ON c.id = e.contact_id WHERE e.seq = 3
        )
        INSERT INTO audience_consentevent (id, seq, contact_id, phone_hash, kind, from_status, to_status, source,
                                           actor, evidence, created_at, personal_digest, chain_hash)
        SELECT id, seq, contact_id, phone_hash, 'change', 'opted_in', 'opted_out', 'keyword', '', '{}', created_at,
               digest, audience_consent_link(previous, audience_consent_entry(
                   seq, id, 'change', created_at, 'opted_in', 'opted_out', 'keyword', '', digest))
        FROM fake
        """
    )
    passed, output = _verify()
    assert not passed
    # The fake itself is well formed; the event it pushed along no longer matches.
    assert f"event {follower.pk} at position 5: does not match its hash" in output


@pytest.mark.django_db
def test_an_event_added_at_the_end_without_the_chain_is_named():
    _history()
    _sql(
        """
        INSERT INTO audience_consentevent (seq, contact_id, phone_hash, kind, from_status, to_status, source, actor,
                                           evidence, created_at, personal_digest, chain_hash)
        SELECT 9, NULL, 'f' || repeat('0', 63), 'change', 'opted_in', 'opted_out', 'keyword', '', '{}', now(),
               sha256('x'), sha256('y')
        """
    )
    [(added,)] = _sql("SELECT id FROM audience_consentevent WHERE seq = 9")
    passed, output = _verify()
    assert not passed and f"event {added} at position 9: does not match its hash" in output


@pytest.mark.django_db
def test_events_removed_from_the_end_are_found_against_a_recorded_head():
    _history()
    passed, output = _verify()
    head = output.rsplit("head ", 1)[1].strip()
    assert passed and head.startswith("8:")
    assert _verify("--expect-head", head)[0]
    _sql("DELETE FROM audience_consentevent WHERE seq >= 7")
    assert _verify()[0]  # the shorter chain is whole in itself
    passed, output = _verify("--expect-head", head)
    assert not passed and "the recorded head (position 8) is gone: events were deleted from the end" in output
    with pytest.raises(CommandError, match="POSITION:HASH"):
        call_command("consent_verify", "--expect-head", "8:nothex")


@pytest.mark.django_db
def test_the_event_writer_refuses_to_run_outside_the_chain():
    """seq is NOT NULL: an event written without the chain's writer is refused by the database."""
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        ConsentEvent.objects.create(phone_hash="x", to_status="opted_out", source="api")


@pytest.mark.django_db
def test_the_migration_chains_the_events_written_before_it():
    _history()
    executor = MigrationExecutor(connection)
    executor.migrate([("audience", "0014_consentevent_kind")])
    assert "seq" not in {
        column.name
        for column in connection.introspection.get_table_description(connection.cursor(), "audience_consentevent")
    }
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # the apps whose migrations depend on audience's too
    passed, output = _verify()
    assert passed, output
    assert "8 events;" in output  # sealed as they stand: the erased events are sealed erased


@pytest.mark.django_db(transaction=True)
def test_an_import_chains_its_events_with_their_evidence(tmp_path):
    services.contact_create(phone="+254712345600", actor="t")
    job = ingest(write(tmp_path, "a.csv", "phone,consent\n+254712345601,yes\n+254712345602,no\n"))
    content = "phone,consent\n+254712345600,no\n+254712345603,\n"
    job_two = ingest(write(tmp_path, "b.csv", content), default_consent="opted_out")
    events = list(
        ConsentEvent.objects.order_by("seq").values_list("seq", "source", "from_status", "to_status", "evidence")
    )
    assert events == [
        (1, "api", "", "opted_in", {}),
        (2, "import", "", "opted_in", {"import_job": job.pk, "line": 2}),
        (3, "import", "", "opted_out", {"import_job": job.pk, "line": 3}),
        (4, "import", "opted_in", "opted_out", {"import_job": job_two.pk, "line": 2}),  # an import may opt out
        (5, "import", "", "opted_out", {"import_job": job_two.pk, "line": 3}),
    ]
    assert consent_chain_verify().ok


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_and_an_import_make_one_linear_chain(tmp_path, monkeypatch):
    monkeypatch.setattr("audience.ingest.engine.BUCKET_THRESHOLD_BYTES", 0)  # eight buckets, two writer sessions
    contacts = [services.contact_create(phone=f"+2547123460{n:02d}", actor="t") for n in range(12)]
    rows = "".join(f"+2547130{n:05d},Contact {n},{'yes' if n % 3 else 'no'}\n" for n in range(600))
    path = write(tmp_path, "list.csv", "phone,name,consent\n" + rows)
    errors = []

    def flip(group):
        try:
            for contact in group:
                for status in (ConsentStatus.OPTED_OUT, ConsentStatus.OPTED_IN):
                    services.consent_change(contact, to_status=status, source=ConsentSource.ADMIN, actor="t")
        except Exception as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=flip, args=(contacts[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    job = ingest(path, workers=2)
    for thread in threads:
        thread.join()
    assert not errors and job.status == "succeeded" and job.created_count == 600
    events = ConsentEvent.objects.count()
    assert events == 12 + 12 * 2 + 600
    assert list(ConsentEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, events + 1))
    report = consent_chain_verify()
    assert report.ok, report.problems
    assert Contact.objects.count() == 612


@pytest.mark.django_db
def test_the_admin_shows_an_events_position_and_chain_hash(client):
    from tests.factories import UserFactory

    _history()
    client.force_login(UserFactory(username="boss", is_superuser=True))
    event = _event_at(3)
    page = client.get(f"/admin/audience/consentevent/{event.pk}/change/").content.decode()
    assert bytes(event.chain_hash).hex() in page
    assert client.get("/admin/audience/consentevent/").status_code == 200
