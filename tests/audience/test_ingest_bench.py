"""The ingest benchmark compares like with like: its baseline imports what the engine imports."""

import csv
import json

import pytest
from django.db import connection

from audience.ingest import services
from audience.models import Contact, ImportSource
from audience.phones import InvalidPhone, normalize_phone
from bench import ingest as bench

pytestmark = pytest.mark.django_db(transaction=True)


def _contacts() -> set[tuple]:
    rows = Contact.objects.values_list("phone", "name", "timezone", "consent_status", "attributes").order_by()
    return {(*row[:-1], json.dumps(row[-1], sort_keys=True)) for row in rows}


def _truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE audience_contacttopic, audience_consentevent, audience_contact CASCADE")


def test_the_generated_file_has_the_promised_mix(tmp_path):
    path = tmp_path / "contacts.csv"
    bench.generate_csv(path, 4000)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4000
    assert list(rows[0]) == ["phone", "name", "timezone", "topics", "age", "score", "vip", "joined", "plan"]
    phones = []
    for row in rows:
        try:
            phones.append(normalize_phone(row["phone"]))
        except InvalidPhone:
            pass
    invalid = 4000 - len(phones)
    duplicates = len(phones) - len(set(phones))
    assert 40 <= invalid <= 120  # about 2 %
    assert 120 <= duplicates <= 280  # about 5 %
    assert len({row["phone"][:3] for row in rows}) > 4  # spelt several ways
    assert any(row["topics"] for row in rows) and any(not row["timezone"] for row in rows)


@pytest.mark.parametrize("cached", [True, False])
def test_the_baseline_imports_the_same_contacts_as_the_engine(tmp_path, cached):
    full, part = tmp_path / "contacts.csv", tmp_path / "slice.csv"
    bench.generate_csv(full, 600)
    bench.slice_csv(full, part, 500)
    job = services.import_job_create(
        source=ImportSource.COMMAND,
        options=services.import_options_clean(default_consent="opted_in"),
        path=str(part),
        actor="test",
    )
    job = services.import_job_run(services.import_job_claim(job.pk))
    assert job.status == "succeeded" and job.created_count > 450
    by_engine = _contacts()
    _truncate()

    rows, seconds = bench.run_baseline(part, cached=cached)

    assert rows == job.total_rows and seconds > 0
    assert _contacts() == by_engine
    assert all(phone.startswith("+") for phone, *_ in by_engine)
