"""Every class of bad input gets a clear problem naming line, column and reason, and good rows still land."""

import json

import pytest

from audience.ingest.services import ImportRejected
from audience.models import Contact, ImportStatus
from audience.resources import ContactExportResource
from tests.ingest import ingest, problems, write

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = "+254712345678"


def test_a_windows_1252_file_is_read_and_each_such_line_is_reported(tmp_path):
    content = "phone,name\n+254712345678,Müller\n+254712345679,Plain\n".encode("cp1252")
    job = ingest(write(tmp_path, "latin.csv", content))
    assert job.status == ImportStatus.SUCCEEDED
    assert Contact.objects.get(phone=GOOD).name == "Müller"
    assert Contact.objects.count() == 2
    [(line, column, reason)] = problems(job, "warning")
    assert (line, column) == (2, "name")
    assert "not valid UTF-8" in reason and "Windows-1252" in reason


def test_a_utf8_bom_is_skipped_so_the_phone_header_is_found(tmp_path):
    job = ingest(write(tmp_path, "bom.csv", b"\xef\xbb\xbfphone,name\n+254712345678,Amina\n"))
    assert job.status == ImportStatus.SUCCEEDED
    assert Contact.objects.get(phone=GOOD).name == "Amina"
    assert any("byte order mark" in note for note in job.details["notes"])


def test_a_semicolon_delimiter_is_detected(tmp_path):
    job = ingest(write(tmp_path, "semi.csv", "phone;name;tz;plan\n+254712345678;Amina;Africa/Nairobi;pro, yearly\n"))
    assert job.details["delimiter"] == ";"
    contact = Contact.objects.get(phone=GOOD)
    assert (contact.name, contact.timezone, contact.attributes) == ("Amina", "Africa/Nairobi", {"plan": "pro, yearly"})


def test_a_file_without_a_phone_column_is_refused_naming_line_1_and_the_columns_found(tmp_path):
    with pytest.raises(ImportRejected) as caught:
        ingest(write(tmp_path, "nophone.csv", "name,email\nAmina,a@example.com\n"))
    message = caught.value.messages[0]
    assert "line 1" in message and "'phone'" in message and "no phone column" in message and "'email'" in message
    assert not Contact.objects.exists()


def test_invalid_and_impossible_numbers_are_rejected_per_row(tmp_path):
    content = "phone,name\n+254712345678,ok\nnot a phone,a\n+2547,b\n+1 415 555 0100 0000,c\n0712345678,d\n"
    job = ingest(write(tmp_path, "phones.csv", content))
    assert list(Contact.objects.values_list("phone", flat=True)) == [GOOD]
    errors = problems(job, "error")
    assert [(line, column) for line, column, _ in errors] == [(3, "phone"), (4, "phone"), (5, "phone"), (6, "phone")]
    assert errors[0][2] == "not a phone number"  # the value stays in its own cell, out of the reason
    assert "too short" in errors[1][2]
    assert "no country code" in errors[3][2]
    assert job.invalid_count == 4 and job.created_count == 1


def test_a_bad_timezone_rejects_that_row_only(tmp_path):
    job = ingest(write(tmp_path, "tz.csv", "phone,timezone\n+254712345678,Mars/Base\n+254712345679,Africa/Nairobi\n"))
    assert list(Contact.objects.values_list("timezone", flat=True)) == ["Africa/Nairobi"]
    [(line, column, reason)] = problems(job, "error")
    assert (line, column) == (2, "timezone") and "Mars/Base" not in reason and "IANA" in reason
    assert job.row_errors.get().value == "Mars/Base"


def test_duplicate_phones_keep_the_last_row_and_are_counted(tmp_path):
    content = "phone,name\n+254712345678,first\n+254 712 345 678,second\nwhatsapp:+254712345678,last\n"
    job = ingest(write(tmp_path, "dups.csv", content))
    assert Contact.objects.get().name == "last"
    assert job.duplicate_count == 2 and job.created_count == 1
    assert [(line, column) for line, column, _ in problems(job, "warning")] == [(2, "phone"), (3, "phone")]
    assert "duplicate of line 4" in problems(job, "warning")[0][2]


def test_a_formula_cell_is_stored_as_text_warned_and_escaped_on_export(tmp_path):
    formula = "=cmd|' /C calc'!A0"
    job = ingest(write(tmp_path, "formula.csv", f'phone,name\n+254712345678,"{formula}"\n'))
    contact = Contact.objects.get()
    assert contact.name == formula
    [(line, column, reason)] = problems(job, "warning")
    assert (line, column) == (2, "name") and "formula" in reason
    exported = ContactExportResource(full=True).export(Contact.objects.all())
    assert exported.dict[0]["name"] == "'" + formula


def test_formula_attribute_cells_are_warned_on_every_row_and_numbers_are_not(tmp_path):
    rows = "".join(f"+2547123456{index:02d},=HYPERLINK(1),-5,@sum\n" for index in range(3))
    job = ingest(write(tmp_path, "formula_attrs.csv", "phone,link,delta,note\n" + rows))
    assert job.invalid_count == 0
    assert sorted((line, column) for line, column, _ in problems(job, "warning")) == [
        (line, column) for line in (2, 3, 4) for column in ("link", "note")
    ]
    contact = Contact.objects.get(phone="+254712345600")
    assert contact.attributes == {"link": "=HYPERLINK(1)", "delta": -5, "note": "@sum"}


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n  \n"])
def test_an_empty_file_is_refused(tmp_path, content):
    with pytest.raises(ImportRejected, match="the file is empty"):
        ingest(write(tmp_path, "empty.csv", content))


def test_a_malformed_json_array_keeps_the_rows_before_the_error(tmp_path):
    content = '[\n {"phone": "+254712345678"},\n {"phone": "+254712345679"},\n {"phone": "+254712345670" "x"},\n]'
    job = ingest(write(tmp_path, "broken.json", content))
    assert sorted(Contact.objects.values_list("phone", flat=True)) == ["+254712345678", "+254712345679"]
    [(line, _column, reason)] = problems(job, "error")
    assert line == 4 and "malformed JSON" in reason and "not read" in reason
    assert job.status == ImportStatus.SUCCEEDED and job.error


def test_a_malformed_json_array_read_by_the_worker_pool_keeps_every_row_before_the_error(tmp_path):
    rows = ",\n".join(f'{{"phone": "+2547120{index:05d}"}}' for index in range(3000))
    content = "[\n" + rows + ',\n {"phone": "+254712399999" "x"}\n]'
    job = ingest(write(tmp_path, "broken.json", content), workers=2)
    assert Contact.objects.count() == 3000
    [(line, _column, reason)] = problems(job, "error")
    assert line == 3002 and "malformed JSON" in reason
    assert job.status == ImportStatus.SUCCEEDED and job.error


def test_a_malformed_jsonl_line_is_reported_and_the_others_land(tmp_path):
    lines = [json.dumps({"phone": "+254712345678", "age": 31}), "{not json", json.dumps({"phone": "+254712345679"})]
    job = ingest(write(tmp_path, "lines.jsonl", "\n".join(lines) + "\n"))
    assert Contact.objects.count() == 2
    assert Contact.objects.get(phone=GOOD).attributes == {"age": 31}
    [(line, _column, reason)] = problems(job, "error")
    assert line == 2 and "malformed JSON" in reason


def test_a_row_with_too_many_cells_is_reported(tmp_path):
    job = ingest(write(tmp_path, "wide.csv", "phone,name\n+254712345678,a,b,c\n+254712345679,ok\n"))
    assert list(Contact.objects.values_list("name", flat=True)) == ["ok"]
    [(line, _column, reason)] = problems(job, "error")
    assert line == 2 and "4 cells but the header has 2 columns" in reason


def test_line_numbers_count_quoted_newlines(tmp_path):
    content = 'phone,name\n+254712345678,"two\nlines"\nbad,x\n'
    job = ingest(write(tmp_path, "multiline.csv", content))
    assert Contact.objects.get().name == "two\nlines"
    assert [line for line, _, _ in problems(job, "error")] == [4]
