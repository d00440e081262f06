"""Values PostgreSQL or the validator cannot take are a problem of their row, never of the whole import.

A time zone that names a folder of the tz database, a NUL character, a lone UTF-16 surrogate, a number
that is not finite: each is an error naming the line, the column and the reason, and the other rows land.
"""

import json

import pytest

from audience.ingest import preview as ingest_preview
from audience.ingest import services
from audience.models import Contact, ImportSource, ImportStatus
from tests.ingest import ingest, problems, write

pytestmark = pytest.mark.django_db(transaction=True)


def _phones() -> list[str]:
    return sorted(Contact.objects.values_list("phone", flat=True))


def _landed(job, *phones: str) -> None:
    assert job.status == ImportStatus.SUCCEEDED and not job.error
    assert _phones() == sorted(phones)


def test_a_time_zone_that_is_a_folder_of_the_tz_database_is_a_row_error(tmp_path):
    content = (
        "phone,timezone\n+254712345601,Africa\n+254712345602,Africa/Nairobi\n"
        "+254712345603,America/Argentina\n+254712345604,Etc\n"
    )
    job = ingest(write(tmp_path, "zones.csv", content))
    _landed(job, "+254712345602")
    assert Contact.objects.get().timezone == "Africa/Nairobi"
    assert problems(job) == [
        (2, "timezone", "not an IANA time zone such as Africa/Nairobi"),
        (4, "timezone", "not an IANA time zone such as Africa/Nairobi"),
        (5, "timezone", "not an IANA time zone such as Africa/Nairobi"),
    ]
    # The same from JSON, where a cell goes the general way.
    content = '[\n{"phone": "+254712345605", "tz": "US"},\n{"phone": "+254712345606", "tz": "US/Pacific"}\n]'
    job = ingest(write(tmp_path, "zones.json", content))
    assert job.status == ImportStatus.SUCCEEDED
    assert Contact.objects.get(phone="+254712345606").timezone == "US/Pacific"
    assert problems(job) == [(2, "tz", "not an IANA time zone such as Africa/Nairobi")]


def test_a_nul_character_in_a_json_value_or_key_is_a_row_error(tmp_path):
    content = (
        '[\n{"phone": "+254712345601", "name": "x\\u0000y"},\n'
        '{"phone": "+254712345602", "name": "ok"},\n'
        '{"phone": "+254712345603", "note": "a\\u0000b"},\n'
        '{"phone": "+254712345604", "deep": {"list": [1, "a\\u0000"]}},\n'
        '{"phone": "+254712345605", "deep": {"k\\u0000": 1}},\n'
        '{"phone": "+254712345606", "k\\u0000": 1},\n'
        '{"phone": "+2547123456\\u000007"}\n]'
    )
    job = ingest(write(tmp_path, "nul.json", content))
    _landed(job, "+254712345602")
    assert problems(job) == [
        (2, "name", "contains a NUL character"),
        (4, "note", "contains a NUL character"),
        (5, "deep", "contains a NUL character"),
        (6, "deep", "contains a NUL character"),
        (7, "k\\x00", "the key contains a NUL character"),
        (8, "phone", "contains a NUL character"),
    ]
    lines = [
        json.dumps({"phone": "+254712345611", "note": "a\u0000b"}),
        json.dumps({"phone": "+254712345612", "note": "fine"}),
        json.dumps({"phone": "+254712345613", "language": "sw\u0000"}),
    ]
    job = ingest(write(tmp_path, "nul.jsonl", "\n".join(lines) + "\n"))
    assert job.status == ImportStatus.SUCCEEDED and not job.error
    assert Contact.objects.get(phone="+254712345612").attributes == {"note": "fine"}
    assert not Contact.objects.filter(phone__in=["+254712345611", "+254712345613"]).exists()
    assert problems(job) == [(1, "note", "contains a NUL character"), (3, "language", "contains a NUL character")]


def test_a_nul_byte_in_a_csv_or_jsonl_file_is_reported_not_silently_removed(tmp_path):
    content = (
        b"phone,name,plan\n+2547123456\x0001,A,basic\n+254712345602,Nu\x00ll,basic\n"
        b"+254712345603,Ok,pro\x00\n+254712345604,Fine,basic\n\x00\x00\n"
    )
    job = ingest(write(tmp_path, "nul.csv", content))
    _landed(job, "+254712345604")
    assert problems(job) == [
        (2, "phone", "contains a NUL character"),
        (3, "name", "contains a NUL character"),
        (4, "plan", "contains a NUL character"),
    ]
    assert job.row_errors.get(line=3).value == "Nu\\x00ll"
    lines = b'{"phone": "+254712345611", "name": "a\x00b"}\n{"phone": "+254712345612"}\n'
    job = ingest(write(tmp_path, "nul.jsonl", lines))
    assert job.status == ImportStatus.SUCCEEDED and not job.error
    assert Contact.objects.filter(phone="+254712345612").exists()
    assert not Contact.objects.filter(phone="+254712345611").exists()
    [(line, column, reason)] = problems(job)
    assert line == 1 and "malformed JSON" in reason


def test_a_lone_surrogate_in_a_json_string_is_a_row_error(tmp_path):
    content = (
        '[\n{"phone": "+254712345601", "name": "ok"},\n{"phone": "+254712345602", "name": "\\ud800"},\n'
        '{"phone": "+254712345603", "extra": ["x", {"y": "\\udfff"}]},\n'
        '{"phone": "+254712345604", "\\ud83d": 1},\n'
        '{"phone": "+254712345605", "name": "\\ud83d\\ude00"}\n]'
    )
    job = ingest(write(tmp_path, "surrogate.json", content))
    _landed(job, "+254712345601", "+254712345605")
    assert Contact.objects.get(phone="+254712345605").name == "\U0001f600"  # a pair is a character
    reason = "contains a lone UTF-16 surrogate, which is not a character"
    assert problems(job) == [(3, "name", reason), (4, "extra", reason), (5, "\\ud83d", f"the key {reason}")]
    assert job.row_errors.get(line=3).value == "\\ud800"
    lines = ['{"phone": "+254712345611", "note": "\\udc00"}', '{"phone": "+254712345612", "note": "ok"}']
    job = ingest(write(tmp_path, "surrogate.jsonl", "\n".join(lines) + "\n"))
    assert job.status == ImportStatus.SUCCEEDED and not job.error
    assert Contact.objects.get(phone="+254712345612").attributes == {"note": "ok"}
    assert problems(job) == [(1, "note", reason)]


def test_a_number_that_is_not_finite_is_a_row_error(tmp_path):
    content = (
        '[\n{"phone": "+254712345601", "x": 1e400},\n{"phone": "+254712345602", "x": NaN},\n'
        '{"phone": "+254712345603", "x": Infinity},\n{"phone": "+254712345604", "x": -Infinity},\n'
        '{"phone": "+254712345605", "deep": {"a": [1, -1e999]}},\n{"phone": "+254712345606", "x": 2.5e-3}\n]'
    )
    job = ingest(write(tmp_path, "numbers.json", content))
    _landed(job, "+254712345606")
    assert Contact.objects.get().attributes == {"x": 0.0025}
    reason = "is not a finite number"
    assert problems(job) == [
        (2, "x", reason),
        (3, "x", reason),
        (4, "x", reason),
        (5, "x", reason),
        (6, "deep", reason),
    ]
    lines = ['{"phone": "+254712345611", "n": NaN}', '{"phone": "+254712345612", "n": 2}']
    job = ingest(write(tmp_path, "numbers.jsonl", "\n".join(lines) + "\n"))
    assert job.status == ImportStatus.SUCCEEDED and not job.error
    assert Contact.objects.get(phone="+254712345612").attributes == {"n": 2}
    assert problems(job) == [(1, "n", reason)]
    # A CSV column of packed JSON attributes is decoded the same way.
    content = 'phone,attributes\n+254712345621,"{""n"": Infinity}"\n+254712345622,"{""s"": ""a\\u0000""}"\n'
    content += '+254712345623,"{""n"": 3}"\n'
    job = ingest(write(tmp_path, "packed.csv", content))
    assert job.status == ImportStatus.SUCCEEDED and not job.error
    assert Contact.objects.get(phone="+254712345623").attributes == {"n": 3}
    assert problems(job) == [(2, "attributes", reason), (3, "attributes", "contains a NUL character")]


def test_the_admin_dry_run_of_such_a_file_lists_the_problems_without_crashing(tmp_path):
    content = (
        '[\n{"phone": "+254712345601", "name": "\\ud800"},\n{"phone": "+254712345602", "name": "x\\u0000y"},\n'
        '{"phone": "+254712345603", "x": Infinity, "tz": "Africa"},\n{"phone": "+254712345604", "name": "ok"}\n]'
    )
    path = write(tmp_path, "dry.json", content)
    job = services.import_job_create(
        source=ImportSource.COMMAND,
        path=str(path),
        options=services.import_options_clean(default_consent="opted_in"),
        actor="tester",
    )
    preview = ingest_preview.import_preview(job)
    assert [(line, column, level, reason) for line, column, level, reason, _ in preview.problems] == [
        (2, "name", "error", "contains a lone UTF-16 surrogate, which is not a character"),
        (3, "name", "error", "contains a NUL character"),
        (4, "tz", "error", "not an IANA time zone such as Africa/Nairobi"),
    ]
    assert [row["phone"] for row in preview.rows] == ["+254712345604"]
    assert preview.counts["new"] == 1 and preview.counts["error"] == 3
    # Every problem can be shown on a page and stored.
    for problem in preview.problems:
        for text in problem[1:]:
            assert "\x00" not in text
            text.encode("utf-8")
    assert not Contact.objects.exists()
