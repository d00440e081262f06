"""The CSV chunker cuts where Python's csv (which the workers parse with) ends a record, and refuses CR-only files."""

import csv
import io
import random

import pytest

from audience.ingest import readers
from audience.ingest.readers import _record_boundary
from audience.ingest.services import ImportRejected
from audience.models import Contact, ImportJob
from tests.ingest import ingest, problems, write

pytestmark = pytest.mark.django_db(transaction=True)

SMALL_CHUNK = 4096
STRAY = "+254700000000,Tall,5'10\""  # the quote is a literal character: the cell is not quoted


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 KB, so a small file crosses many chunk boundaries."""
    monkeypatch.setattr("audience.ingest.readers.CHUNK_BYTES", SMALL_CHUNK)


def _phone(index: int) -> str:
    return f"+2547{index:08d}"


def test_a_stray_quote_does_not_make_the_chunker_cut_multiline_quoted_cells(tmp_path, small_chunks):
    names = {}
    lines = ["phone,name,height", STRAY]
    for index in range(1, 601):
        if index % 5 == 0:
            names[_phone(index)] = f'Quote "{index}"\nLine2'
            lines.append(f'{_phone(index)},"Quote ""{index}""\nLine2",x')
        elif index % 7 == 0:
            names[_phone(index)] = f'O"Brien {index}'  # another stray quote, after quoted cells
            lines.append(f'{_phone(index)},O"Brien {index},x')
        else:
            names[_phone(index)] = f"Name {index}\nLine2"
            lines.append(f'{_phone(index)},"Name {index}\nLine2",x')
    bad_line = 1 + sum(line.count("\n") + 1 for line in lines)
    lines.append('not a phone,"Bad\nRow",y')
    lines.append(_phone(999) + ",Last,z")
    names[_phone(999)] = "Last"
    names["+254700000000"] = "Tall"
    path = write(tmp_path, "multiline.csv", "\n".join(lines) + "\n")
    assert path.stat().st_size > 4 * SMALL_CHUNK

    job = ingest(path)

    assert job.total_rows == len(lines) - 1 == 603
    assert job.invalid_count == 1 and job.created_count == 602
    assert dict(Contact.objects.values_list("phone", "name")) == names
    assert Contact.objects.get(phone="+254700000000").attributes == {"height": "5'10\""}
    [(line, column, reason)] = problems(job, "error")
    assert (line, column) == (bad_line, "phone") and "not a phone number" in reason


def test_a_stray_quote_does_not_make_the_carry_grow_into_one_huge_chunk(tmp_path, small_chunks):
    """Without multi-line cells the chunks stay chunk-sized (the old parity count carried up to 8 MB, quadratically)."""
    rows = "".join(f"{_phone(index)},Name {index},x\n" for index in range(1, 3001))
    path = write(tmp_path, "plain.csv", "phone,name,height\n" + STRAY + "\n" + rows)
    layout = readers.inspect_csv(str(path))
    chunks = list(readers.iter_csv_chunks(str(path), layout))
    assert len(chunks) >= path.stat().st_size // SMALL_CHUNK
    assert max(len(chunk.data) for chunk in chunks) <= SMALL_CHUNK + 64
    assert b"".join(chunk.data for chunk in chunks) == path.read_bytes()[layout.header_bytes :]

    job = ingest(path)
    assert job.total_rows == 3001 and job.invalid_count == 0
    assert Contact.objects.count() == 3001
    assert Contact.objects.get(phone=_phone(2999)).name == "Name 2999"


BOUNDARIES = [
    # The stray quote is literal; the newline inside "a\nb" is not a record end.
    (b'+1,Tall,5\'10"\n+2,"a\nb",x\n+3,"c\nd', ",", 24),
    (b'+1,Tall,5\'10"\n+2,"a\nb",x\n+3,plain\n', ",", 33),
    # "" is an escaped quote: the field goes on past it and past the newline.
    (b'+1,"say ""hi""\nthere",x\n+2,"open ""\n', ",", 23),
    # A quote closing a field and followed by text: the rest of the field is plain.
    (b'+1,"a"b"c\n+2,x\n', ",", 14),
    # A quote opens a field only after this file's delimiter, not after a comma in a ;-file.
    (b'+1;a,"b\nc;d\n', ";", 11),
    (b'+1;"a,b\nc";d\n+2;"e', ";", 12),
    (b'+1\t5\'10"\t"a\nb"\n+2', "\t", 14),
    (b'"+1"|O"Brien\n"+2"|"x\n', "|", 12),
    # A record ending with CRLF; a field starting after a lone CR.
    (b'+1,"a\r\nb",c\r\n+2,"d', ",", 12),
    # Nothing ends a record yet: the first record's quoted field is still open.
    (b'+1,"a\nb\nc', ",", -1),
    # JSON Lines: every newline ends a record, quotes or not.
    (b'{"a": "5\'10\\""}\n{"b": "x"}\n{"c', None, 26),
]


def test_the_record_boundary_agrees_with_csv():
    """Crafted blocks (data, delimiter, index of the last newline that ends a record)."""
    for data, delimiter, expected in BOUNDARIES:
        assert _record_boundary(data, delimiter) == expected, data


CELLS = ["plain", "5'10\"", 'O"Brien', '"a\nb"', '"say ""hi"""', '"x""\n""y"', '""', "", '"c,d"e"f', ' "g']


def test_the_record_boundary_is_the_end_of_the_last_whole_record_at_every_cut():
    """Records of cells that mix stray and quoted quotes, cut at every byte: the last whole record ends the chunk."""
    rng = random.Random(11)
    data, ends = b"", []
    for index in range(300):
        cells = [_phone(index)] + [rng.choice(CELLS) for _ in range(3)]
        data += ",".join(cells).encode() + (b"\r\n" if index % 3 == 0 else b"\n")
        ends.append(len(data) - 1)
    records = list(csv.reader(data.decode().splitlines(keepends=True)))
    assert len(records) == 300 and [record[0] for record in records] == [_phone(index) for index in range(300)]
    for size in range(len(data) + 1):
        expected = max((end for end in ends if end < size), default=-1)
        assert _record_boundary(data[:size], ",") == expected, size


def _csv_record_boundary(data: bytes, delimiter: str) -> int:
    """What the workers' csv reader says: the newline ending the last record that more data could not extend."""
    text = data.decode() + "x\n"  # an open quoted field swallows this; after a whole record it is a record of its own
    line_ends = [0]
    for line in io.StringIO(text, newline=""):
        line_ends.append(line_ends[-1] + len(line.encode()))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    ends = [line_ends[reader.line_num] - 1 for _ in reader]
    return ends[-2] if len(ends) > 1 else -1


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_the_record_boundary_matches_the_csv_reader_on_random_quote_heavy_data(delimiter):
    """Quotes that open, close, escape or are literal, in every order: the cut is where csv ends a record."""
    rng = random.Random(20)
    tokens = ['"', '""', '"""', delimiter, ",", "\n", "\r\n", "a", "5'10\"", '"x"', " "]
    for _ in range(20000):
        data = "".join(rng.choice(tokens) for _ in range(rng.randint(1, 16))).encode()
        assert _record_boundary(data, delimiter) == _csv_record_boundary(data, delimiter), data


def _refused(path) -> str:
    with pytest.raises(ImportRejected) as caught:
        ingest(path)
    assert not ImportJob.objects.exists()
    [message] = caught.value.messages
    return message


@pytest.mark.parametrize(
    "content",
    [
        b"phone,name\r+254712345611,A\rbad,B\r",
        b"phone,name\r" + b"".join(b"+2547%08d,Name\r" % index for index in range(5000)),  # more than 64 KB
    ],
)
def test_a_file_whose_lines_end_with_a_carriage_return_only_is_refused_with_a_clear_reason(tmp_path, content):
    message = _refused(write(tmp_path, "mac.csv", content))
    assert message.startswith("line 1: ")
    assert "carriage return only (old Mac format)" in message and "Windows or Unix line endings" in message

    # The same rows with Windows line endings import.
    job = ingest(write(tmp_path, "windows.csv", b"phone,name\r\n+254712345611,A\r\nbad,B\r\n"))
    assert Contact.objects.get().name == "A" and job.invalid_count == 1
    assert [(line, column) for line, column, _ in problems(job, "error")] == [(3, "phone")]


def test_no_csv_error_escapes_reading_the_header(tmp_path):
    limit = csv.field_size_limit()
    csv.field_size_limit(8)
    try:
        message = _refused(write(tmp_path, "wide.csv", "phone,a_very_long_column_name\n+254712345611,A\n"))
    finally:
        csv.field_size_limit(limit)
    assert message.startswith("line 1: ") and "the header line is not readable as CSV" in message


def test_a_nul_in_the_csv_header_refuses_the_file_clearly(tmp_path):
    path = write(tmp_path, "nul-header.csv", b"phone,no\x00te\n+254712345601,x\n")
    with pytest.raises(ImportRejected) as caught:
        ingest(path)
    assert "line 1" in str(caught.value) and "NUL" in str(caught.value)
    assert not ImportJob.objects.exists()


def test_content_after_a_json_arrays_end_is_reported_not_ignored(tmp_path):
    path = write(tmp_path, "two.json", '[{"phone":"+254712345601"}]\n[{"phone":"+254712345602"}]\n')
    job = ingest(path)
    assert list(Contact.objects.values_list("phone", flat=True)) == ["+254712345601"]
    [(line, _column, reason)] = problems(job)
    assert line == 2 and "after the closing ']'" in reason
    assert ingest(write(tmp_path, "one.json", '[{"phone":"+254712345603"}]\n\n  \n')).error == ""


def test_a_json_number_too_long_to_read_stops_the_file_with_a_reason(tmp_path):
    content = '[{"phone":"+254712345604"},\n{"phone":"+254712345605","n":' + "9" * 5000 + "}]"
    path = write(tmp_path, "long.json", content)
    job = ingest(path)
    assert list(Contact.objects.values_list("phone", flat=True)) == ["+254712345604"]
    [(line, _column, reason)] = problems(job)
    assert line == 2 and "not readable as JSON" in reason
