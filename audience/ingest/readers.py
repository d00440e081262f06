"""Streaming readers for CSV and JSON Lines, and what every reader shares (JSON arrays: ``json_reader``).

The main process only cuts the file into chunks of whole records (and, for a
JSON array, decodes the objects); the workers decode, parse and validate. No
reader ever holds more than one chunk of the file in memory.
"""

from __future__ import annotations

import codecs
import csv
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from audience.attributes import AttributeLimits

CHUNK_BYTES = 1 << 19
MAX_RECORD_BYTES = 8 << 20
SNIFF_BYTES = 64 << 10
DELIMITERS = (",", ";", "\t", "|")
UTF8_BOM = codecs.BOM_UTF8
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
CR_ONLY = "lines end with a carriage return only (old Mac format); save the file with Windows or Unix line endings"

PHONE_ALIASES = frozenset(
    {"phone", "phone_number", "phonenumber", "mobile", "mobile_number", "msisdn", "number", "tel", "telephone", "cell"}
)
FIELD_ALIASES = {
    "name": "name",
    "full_name": "name",
    "fullname": "name",
    "email": "email",
    "e_mail": "email",
    "email_address": "email",
    "channel": "channel",
    "locale": "locale",
    "language": "locale",
    "lang": "locale",
    "timezone": "timezone",
    "time_zone": "timezone",
    "tz": "timezone",
    "consent": "consent",
    "consent_status": "consent",
    "topics": "topics",
    "topic": "topics",
    "tags": "topics",
    "attributes": "attributes",
}
ATTRIBUTE_PREFIXES = ("attributes.", "attribute.", "attr.", "attr:")


class FileProblem(Exception):
    """The whole file cannot be imported; names the line, column and reason."""

    def __init__(self, reason: str, *, line: int = 1, column: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.column = column

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class Column:
    index: int
    header: str
    kind: str  # phone, name, email, channel, locale, timezone, consent, topics, attributes, attribute
    key: str = ""


@dataclass(frozen=True)
class Layout:
    """What a reader learned from the start of the file; passed to every worker."""

    file_format: str
    delimiter: str = ","
    bom: bool = False
    columns: tuple[Column, ...] = ()
    header_bytes: int = 0
    notes: tuple[str, ...] = field(default=())
    attribute_limits: AttributeLimits = AttributeLimits()  # the settings', set by inspect_file
    default_region: str = ""  # the country of national numbers (the import's choice); "" for none

    @property
    def has_consent_column(self) -> bool:
        """Whether the header names a consent column (a JSON file has no header: each record says)."""
        return any(column.kind == "consent" for column in self.columns)

    def describe(self) -> dict:
        return {
            "format": self.file_format,
            "delimiter": self.delimiter if self.file_format == "csv" else None,
            "bom": self.bom,
            "columns": {column.header: column.kind for column in self.columns},
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Chunk:
    """A run of whole records. ``kind`` is csv or jsonl (raw bytes) or records (decoded JSON objects)."""

    kind: str
    start_line: int
    data: bytes | list
    end_offset: int


def normalise_header(raw: str) -> str:
    return raw.strip().strip('"').strip().lower().replace(" ", "_").replace("-", "_")


def column_for(index: int, header: str) -> Column:
    key = normalise_header(header)
    if key in PHONE_ALIASES:
        return Column(index, header, "phone")
    if key in FIELD_ALIASES:
        return Column(index, header, FIELD_ALIASES[key])
    for prefix in ATTRIBUTE_PREFIXES:
        if key.startswith(prefix):
            return Column(index, header, "attribute", header.strip()[len(prefix) :].strip())
    return Column(index, header, "attribute", header.strip())


def detect_format(path: str, name: str = "") -> str:
    """csv, json or jsonl: from the extension, else from the first character."""
    lowered = (name or path).lower()
    for extension, kind in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv")):
        if lowered.endswith(extension):
            return kind
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES).lstrip(UTF8_BOM).lstrip()
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl"
    return "csv"


def check_not_empty_or_utf16(head: bytes) -> bool:
    if head.startswith(UTF16_BOMS):
        raise FileProblem("the file is UTF-16 encoded; save it as 'CSV UTF-8' (or plain UTF-8) and upload it again")
    bom = head.startswith(UTF8_BOM)
    if not head[len(UTF8_BOM) if bom else 0 :].strip():
        raise FileProblem("the file is empty")
    return bom


def decode_text(raw: bytes) -> tuple[str, bool]:
    """UTF-8, else Windows-1252 (what spreadsheets on Windows save), else Latin-1; True when not UTF-8."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252"), True
        except UnicodeDecodeError:
            return raw.decode("latin-1"), True


def sniff_delimiter(header_line: str) -> str:
    counts = {delimiter: header_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def inspect_csv(path: str) -> Layout:
    """Read the header: delimiter, BOM and the role of each column. Raises FileProblem."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    bom = check_not_empty_or_utf16(head)
    body = head[len(UTF8_BOM) :] if bom else head
    first_line, newline, _rest = body.partition(b"\n")
    line = first_line.rstrip(b"\r")
    if b"\x00" in line:
        raise FileProblem("the header line holds a NUL character; is this really a CSV file?")
    if b"\r" in line and not newline:  # the whole file, or its first 64 KB, is one line: lines end with CR
        raise FileProblem(CR_ONLY)
    if not newline and len(head) == SNIFF_BYTES:
        raise FileProblem("the header line is longer than 64 KB; is this really a CSV file?")
    text, fell_back = decode_text(line)
    delimiter = sniff_delimiter(text)
    try:
        headers = next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error as exc:  # a carriage return outside quotes ends csv's record: CR line ends
        raise FileProblem(CR_ONLY if b"\r" in line else f"the header line is not readable as CSV ({exc})") from None
    columns = _columns(headers)
    notes = []
    if bom:
        notes.append("a UTF-8 byte order mark (BOM) was found and skipped")
    if delimiter != ",":
        notes.append(f"columns are separated by {delimiter!r}")
    if fell_back:
        notes.append("the header is not UTF-8; it was read as Windows-1252")
    header_bytes = (len(UTF8_BOM) if bom else 0) + len(first_line) + len(newline)
    return Layout("csv", delimiter, bom, columns, header_bytes, tuple(notes))


def _columns(headers: list[str]) -> tuple[Column, ...]:
    columns = [column_for(index, header) for index, header in enumerate(headers) if header.strip()]
    phones = [column for column in columns if column.kind == "phone"]
    found = ", ".join(repr(header) for header in headers) or "none"
    if not phones:
        raise FileProblem(
            f"no phone column; name one of: {', '.join(sorted(PHONE_ALIASES))} (columns found: {found})",
            column="phone",
        )
    seen: set[tuple[str, str]] = set()
    for column in columns:
        identity = (column.kind, column.key)
        if identity in seen and column.kind != "topics":
            raise FileProblem(f"two columns mean the same thing ({column.header!r})", column=column.header)
        seen.add(identity)
    return tuple(columns)


def iter_csv_chunks(path: str, layout: Layout, chunk_bytes: int | None = None) -> Iterator[Chunk]:
    """Cut the body into chunks that end at a record boundary (outside quoted fields)."""
    with open(path, "rb") as handle:
        handle.seek(layout.header_bytes)
        yield from _cut_lines(
            handle, "csv", 2, layout.header_bytes, chunk_bytes or CHUNK_BYTES, delimiter=layout.delimiter
        )


def iter_jsonl_chunks(path: str, layout: Layout, chunk_bytes: int | None = None) -> Iterator[Chunk]:
    with open(path, "rb") as handle:
        handle.seek(layout.header_bytes)
        yield from _cut_lines(handle, "jsonl", 1, layout.header_bytes, chunk_bytes or CHUNK_BYTES, delimiter=None)


def _cut_lines(
    handle, kind: str, line: int, offset: int, chunk_bytes: int, *, delimiter: str | None
) -> Iterator[Chunk]:
    """Chunks of whole lines; for CSV (``delimiter`` given) a newline inside a quoted field is not a cut."""
    carry = b""
    while True:
        block = handle.read(chunk_bytes)
        data = carry + block
        if not block:
            if data.strip():
                yield Chunk(kind, line, data, offset + len(data))
            return
        cut = _record_boundary(data, delimiter)
        if cut < 0 and len(data) < MAX_RECORD_BYTES:
            carry = data
            continue
        if cut < 0:
            cut = data.rfind(b"\n")  # an unbalanced quote: give up on it, the worker reports the line
        if cut < 0:
            raise FileProblem("a single record is longer than 8 MB", line=line)
        piece, carry = data[: cut + 1], data[cut + 1 :]
        offset += len(piece)
        yield Chunk(kind, line, piece, offset)
        line += piece.count(b"\n")


@functools.cache
def _whole_records(delimiter: str) -> re.Pattern[bytes]:
    """Whole CSV records at the start of the data, as Python's csv reads them; the match ends at the last newline.

    The workers parse with csv's excel dialect: a quote opens a quoted field
    only at the start of a field (the data starts at a record start; a field
    starts after the delimiter, a CR or a newline); anywhere else it is a
    literal character (``5'10"``, ``O"Brien``). Inside a quoted field ``""`` is
    an escaped quote and a newline is part of the value, so a quoted field is a
    run of ``"..."`` blocks with no quote right after the last; what follows up
    to the delimiter is plain text. A quoted field that does not close in the
    data stops the run there.

    The pattern only walks from one quote to the next: text between quotes is
    one ``[^"]*`` step, each quote is literal or opens a quoted field according
    to the byte before it (the two lookbehinds exclude each other), so no input
    has two readings, a failed match gives back only the last record, and one
    match is linear in the data (it runs on every chunk of every file). It uses
    no possessive quantifier or atomic group: before Python 3.11.5 those match
    where the plain pattern would not (CPython gh-106052, gh-100061), so the
    cut would depend on the patch release.
    """
    field_start = rb"[" + re.escape(delimiter.encode()) + rb"\r\n]"
    field_start_complement = rb"[^" + field_start[1:]
    literal_quote = rb"(?<=" + field_start_complement + rb')"'
    quoted_field = rb"(?<!" + field_start_complement + rb')(?:"[^"]*")+(?!")'
    return re.compile(rb'[^"]*(?:(?:' + literal_quote + rb"|" + quoted_field + rb')[^"]*)*\n')


def _record_boundary(data: bytes, delimiter: str | None = None) -> int:
    """Index of the last newline that ends a record, or -1.

    ``delimiter`` None (JSON Lines): every newline ends one. For CSV a newline
    inside a quoted field does not; data without a quote takes the fast path.
    The match stops at the last newline, so a partial record after it costs nothing.
    """
    cut = data.rfind(b"\n")
    if delimiter is None or cut < 0 or data.find(b'"', 0, cut) < 0:
        return cut
    whole = _whole_records(delimiter).match(data, 0, cut + 1)
    return whole.end() - 1 if whole else -1


def file_size(path: str) -> int:
    return os.path.getsize(path)
