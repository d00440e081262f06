"""Per-row validation, run in worker processes over chunks of records.

A chunk comes in as raw bytes (CSV, JSONL) or decoded objects (JSON array) and
goes out as COPY-ready text for the staging table plus the problems found, so
the main process only streams bytes into PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zlib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from audience.attributes import AttributeLimits
from audience.ingest.readers import Chunk, Column, Layout, decode_text
from audience.phones import CHANNEL_PREFIXES, InvalidPhone, normalize_phone
from config.spreadsheet import escape_formula

STAGE_COLUMNS = (
    "line",
    "bucket",
    "phone",
    "name",
    "email",
    "channel",
    "locale",
    "timezone",
    "consent",
    "attributes",
    "topics",
)
CHANNELS = frozenset({"whatsapp", "sms"})
CONSENT_WORDS = {
    **dict.fromkeys(
        ("opted_in", "opted-in", "in", "yes", "y", "true", "1", "subscribed", "opt_in", "opt-in"), "opted_in"
    ),
    **dict.fromkeys(
        ("opted_out", "opted-out", "out", "no", "n", "false", "0", "unsubscribed", "opt_out", "opt-out"), "opted_out"
    ),
}
TOPIC_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TOPIC_SPLIT_RE = re.compile(r"[|,;]")
NUMBER_RE = re.compile(r"-?(?:0|[1-9]\d{0,14})(\.\d{1,15})?")  # the group: a decimal part
PHONE_PUNCTUATION = str.maketrans("", "", " -.()/\u00a0")
COPY_ESCAPE_MAP = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}  # what COPY text escapes
COPY_ESCAPES = str.maketrans(COPY_ESCAPE_MAP)
FORMULA_STARTS = frozenset("=+-@\t\r")
NUMBER_STARTS = frozenset("-0123456789")
BOOLEAN_STARTS = frozenset("tTfF")
# allow_nan=False: NaN and Infinity are not JSON, and jsonb refuses them (the ValueError becomes a row problem).
_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_json_string = json.encoder.encode_basestring  # the C encoder json uses with ensure_ascii=False
LIMITS = {"name": 200, "email": 254, "locale": 16, "timezone": 64}
VALUE_CUT = 200
COLUMN_CUT = 100  # ImportRowError.column's max_length
# What PostgreSQL cannot store: a NUL (text and jsonb refuse it) and a lone UTF-16 surrogate (not UTF-8).
BAD_TEXT_RE = re.compile(r"[\x00\ud800-\udfff]")
# A NUL in JSON text as jsonb sees it in a COPY line: the escape \u0000 with its backslash escaped for COPY. A
# text that really holds a backslash and "u0000" has it too, and _unstorable then finds nothing wrong.
COPY_JSON_NUL = "\\\\u0000"
NUL_REASON = "contains a NUL character"
SURROGATE_REASON = "contains a lone UTF-16 surrogate, which is not a character"
NOT_FINITE_REASON = "is not a finite number"
_email_validator = EmailValidator()


@dataclass
class ChunkResult:
    copy_data: bytes = b""
    problems: list[tuple[int, str, str, str, str]] = field(default_factory=list)  # line, column, level, reason, value
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    warnings: int = 0
    topics: set[str] = field(default_factory=set)
    end_offset: int = 0


class RowProblem(Exception):
    def __init__(self, column: str, reason: str, value: object = ""):
        super().__init__(reason)
        self.column, self.reason, self.value = column, reason, value


# --- phones ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Region:
    """One region's validity rule, precompiled into a single pattern.

    phonenumbers calls a number valid when it matches the region's general
    pattern and lengths, and one number type's pattern and lengths. Here the
    general lengths are a set and the rest is one regular expression: the
    general pattern as a lookahead, then the types as alternatives, each behind
    a lookahead for its own lengths (a type without lengths has none).
    """

    leading_digits: re.Pattern | None
    lengths: frozenset[int]
    rule: re.Pattern

    def valid(self, national: str) -> bool:
        return (not self.lengths or len(national) in self.lengths) and self.rule.fullmatch(national) is not None


def _lengths_guard(lengths) -> str:
    return "(?=(?:" + "|".join(f".{{{int(size)}}}" for size in sorted(lengths)) + r")\Z)" if lengths else ""


def _type_rule(number_desc) -> str | None:
    if number_desc is None or not number_desc.national_number_pattern:
        return None
    return _lengths_guard(number_desc.possible_length or ()) + f"(?:{number_desc.national_number_pattern})"


# Mobile and fixed line first: most numbers are one of them, and any type makes a number valid.
_TYPES = ("mobile", "fixed_line", "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager")
_TYPES += ("uan", "voicemail")


def _region(metadata) -> _Region | None:
    general = metadata.general_desc
    if general is None or not general.national_number_pattern:
        return None
    types = [rule for rule in (_type_rule(getattr(metadata, kind)) for kind in _TYPES) if rule]
    # A region without number types has no valid number: (?!) never matches.
    alternatives = "|".join(types) if types else "(?!)"
    rule = rf"(?=(?:{general.national_number_pattern})\Z)(?:{alternatives})"
    leading = re.compile(metadata.leading_digits) if metadata.leading_digits else None
    return _Region(leading, frozenset(general.possible_length or ()), re.compile(rule))


@dataclass(frozen=True)
class _Country:
    national_prefix: re.Pattern | None
    regions: tuple[_Region, ...]


@lru_cache(maxsize=512)
def _country(code: int) -> _Country | None:
    """The calling code's regions in phonenumbers' order; None sends the number down the full path."""
    names = COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if not names or "001" in names:
        return None
    metadatas = [PhoneMetadata.metadata_for_region(name) for name in names]
    regions = tuple(_region(metadata) for metadata in metadatas if metadata is not None)
    if not regions or any(region is None for region in regions):
        return None
    prefix = metadatas[0].national_prefix_for_parsing if metadatas[0] else None
    return _Country(re.compile(prefix) if prefix else None, regions)


def _split_country_code(digits: str) -> tuple[int, str] | None:
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            return code, digits[size:]
    return None


# The country code of every number by its first three digits (what _split_country_code finds), as
# (code, its length); a lead that starts with 0 or has no code is absent and takes the full path.
_CODE_BY_LEAD = {
    lead: (split[0], 3 - len(split[1]))
    for lead in (f"{n:03d}" for n in range(100, 1000))
    if (split := _split_country_code(lead)) is not None
}


def _fast_valid(code: int, national: str) -> bool | None:
    """phonenumbers.is_valid_number for PhoneNumber(code, int(national)); None when the shortcut cannot say."""
    country = _country(code)
    if country is None:
        return None
    if country.national_prefix is not None and country.national_prefix.match(national):
        return None  # parse() would try to strip a national prefix: let it
    for region in country.regions:
        # phonenumbers picks the first region whose leading digits match, else the first the number is valid in.
        if region.leading_digits is not None:
            if region.leading_digits.match(national):
                return region.valid(national)
        elif region.valid(national):
            return True
    return False


PLAIN_STARTS = frozenset("+0123456789( ")


def fast_normalize_phone(raw: str, default_region: str = "") -> str:
    """normalize_phone with a shortcut for plain international numbers.

    For ``+<digits>`` with no leading zero or national prefix, phonenumbers.parse
    builds PhoneNumber(country code, int(rest)); the shortcut builds the same and
    applies the same validity rule (the general pattern and one number-type
    pattern of the region) with precompiled patterns. Any other spelling, and
    every failure, takes normalize_phone's path, so results and error messages
    are exactly normalize_phone's (tests compare the two). ``default_region``: the
    country of national numbers ("" for none), as normalize_phone takes it.
    """
    value = raw.strip()
    if value[:1] not in PLAIN_STARTS:  # perhaps whatsapp:, sms: or tel:
        lowered = value[:9].lower()
        for prefix in CHANNEL_PREFIXES:
            if lowered.startswith(prefix):
                value = value[len(prefix) :]
                break
    digits = value.translate(PHONE_PUNCTUATION)
    if digits[:2] == "00":
        digits = "+" + digits[2:]
    if digits[:1] == "+" and 8 <= len(digits) <= 16 and digits.isascii() and digits[1:].isdigit():
        lead = _CODE_BY_LEAD.get(digits[1:4])
        if lead is not None:
            code, size = lead
            national = digits[1 + size :]
            if national[:1] != "0" and _fast_valid(code, national):
                return digits  # "+", the code and the national number: the E.164 form
    return normalize_phone(raw, default_region)


# --- cells -----------------------------------------------------------------------------------


@lru_cache(maxsize=2048)
def _timezone_ok(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # a folder (Africa, Etc) is an IsADirectoryError
        return False
    return True


def infer_scalar(text: str):
    """A CSV cell as the JSON type a person meant: true/false, integers, decimals, else text."""
    first = text[:1]
    if first in NUMBER_STARTS:
        number = NUMBER_RE.fullmatch(text)
        if number is None:
            return text
        return float(text) if number.group(1) else int(text)
    if first in BOOLEAN_STARTS and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _clean_text(column: str, value) -> str | None:
    if value is None:
        return None
    text = value.strip() if type(value) is str else str(value).strip()
    if not text:
        return None
    limit = LIMITS.get(column)
    if limit and len(text) > limit:
        raise RowProblem(column, f"longer than {limit} characters", text)
    return text


def _topics(value) -> list[str]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else TOPIC_SPLIT_RE.split(str(value))
    names = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if not TOPIC_RE.match(name):
            raise RowProblem("topics", "not a topic name (lower-case letters, digits, '-' and '_')", item)
        names.append(name)
    return names


def _copy_text(value: str | None) -> str:
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(COPY_ESCAPES)
    return value


_COPY_UNESCAPES = {escaped[1]: raw for raw, escaped in COPY_ESCAPE_MAP.items()}
_COPY_ESCAPED = re.compile(r"\\(.)")


def copy_unescape(cell: str) -> str:
    """A value of COPY text as it will be stored: _copy_text's escapes undone (``\\N`` is the caller's)."""
    if "\\" not in cell:
        return cell
    return _COPY_ESCAPED.sub(lambda found: _COPY_UNESCAPES.get(found.group(1), found.group(1)), cell)


@dataclass
class Row:
    """One record's cells by role, as read (strings for CSV, JSON values for JSON)."""

    line: int
    cells: dict[str, object]
    attributes: dict[str, object]
    headers: dict[str, str]
    decoded: bool = False  # from a JSON decoder, so strings may hold a NUL or a lone surrogate, numbers NaN


class RowValidator:
    def __init__(self, buckets: int, limits: AttributeLimits | None = None, default_region: str = ""):
        self.buckets = buckets
        self.limits = limits or AttributeLimits()
        self.default_region = default_region
        self._scalars: dict[str, tuple[str, bool]] = {}  # a text cell's JSON text and whether it is a formula

    def validate(self, row: Row, result: ChunkResult) -> str | None:
        """Return the COPY line for a good row; record problems in ``result``."""
        try:
            return self._copy_line(row, result)
        except RowProblem as problem:
            column = row.headers.get(problem.column, problem.column)
            result.problems.append((row.line, column, "error", problem.reason, _cut(problem.value)))
            result.invalid += 1
            return None

    def _copy_line(self, row: Row, result: ChunkResult) -> str:
        cells = row.cells
        raw_phone = cells.get("phone")
        if raw_phone is None or str(raw_phone).strip() == "":
            raise RowProblem("phone", "phone is empty")
        if row.decoded and type(raw_phone) is str and (reason := _text_reason(raw_phone)):
            raise RowProblem("phone", reason, raw_phone)  # before normalising, which would drop the character
        try:
            phone = fast_normalize_phone(str(raw_phone), self.default_region)
        except InvalidPhone as exc:
            raise RowProblem("phone", exc.reason, raw_phone) from None
        name = _clean_text("name", cells.get("name"))
        email = _clean_text("email", cells.get("email"))
        if email is not None:
            try:
                _email_validator(email)
            except ValidationError:
                raise RowProblem("email", "not an e-mail address", email) from None
        channel = _clean_text("channel", cells.get("channel"))
        if channel is not None:
            channel = channel.lower()
            if channel not in CHANNELS:
                raise RowProblem("channel", "not one of whatsapp, sms", channel)
        elif _says_whatsapp(str(raw_phone)):
            channel = "whatsapp"
        locale = _clean_text("locale", cells.get("locale"))
        timezone = _clean_text("timezone", cells.get("timezone"))
        if timezone is not None and not _timezone_ok(timezone):
            raise RowProblem("timezone", "not an IANA time zone such as Africa/Nairobi", timezone)
        consent = self._consent(cells.get("consent"))
        topics = _topics(cells.get("topics"))
        packed = cells.get("attributes")
        warned = len(result.problems), result.warnings  # a row that turns out unstorable gets only its error
        problem = None
        attributes_text = None if packed in (None, "") else _NOT_TEXT_CELLS
        if attributes_text is None:
            attributes_text = self._text_attributes(row, result, name, email)
        if attributes_text is _NOT_TEXT_CELLS:
            attributes = self._attributes(packed, row.attributes)
            problem = self._past_limit(attributes)  # first: a value nested too deep is not walked further
            if problem is None:
                self._warn_formulas(row, result, name, email, attributes)
                try:
                    attributes_text = _json_object(attributes) if attributes else None
                except ValueError:  # NaN or Infinity (allow_nan=False)
                    problem = _unstorable(row) or RowProblem("attributes", NOT_FINITE_REASON, attributes)
        if problem is None and attributes_text is not None and (reason := self.limits.size_problem(attributes_text)):
            problem = RowProblem("attributes", reason, attributes_text)
        if problem is None:
            bucket = zlib.crc32(phone.encode()) % self.buckets
            topics_text = "{" + ",".join(topics) + "}" if topics else None
            values = (name, email, channel, locale, timezone, consent, attributes_text, topics_text)
            prefix = f"{row.line}\t{bucket}\t{phone}\t"
            line = prefix + "\t".join([_copy_text(value) for value in values]) + "\n"
            # Decoded JSON (a JSON row, a CSV column of packed JSON) may hold what PostgreSQL cannot store.
            # Substring tests are ~20 times faster than one regular expression; only non-ASCII can be a surrogate.
            if (row.decoded or packed) and (
                COPY_JSON_NUL in line or "\x00" in line or (not line.isascii() and BAD_TEXT_RE.search(line) is not None)
            ):
                problem = _unstorable(row)
        if problem is not None:
            del result.problems[warned[0] :]
            result.warnings = warned[1]
            raise problem
        result.valid += 1
        result.topics.update(topics)
        return line

    def _past_limit(self, attributes: dict) -> RowProblem | None:
        """The attribute limits but the total size, which is checked on the JSON text."""
        reason = self.limits.too_many(len(attributes))
        if reason:
            return RowProblem("attributes", reason, f"{len(attributes)} keys")
        for key, value in attributes.items():
            reason = self.limits.key_problem(key) or self.limits.value_problem(value)
            if reason:
                return RowProblem(key, reason, value if type(value) is str else "")
        return None

    @staticmethod
    def _consent(value) -> str | None:
        if value is None or value == "":
            return None
        word = str(value).strip().lower()
        if word not in CONSENT_WORDS:
            raise RowProblem("consent", "not a consent value; use opted_in or opted_out", value)
        return CONSENT_WORDS[word]

    def _text_attributes(self, row: Row, result: ChunkResult, name, email):
        """The attributes' JSON text when every one is a text cell (CSV): _attributes, _warn_formulas and
        _json_object in one pass, each distinct cell inferred once a chunk. _NOT_TEXT_CELLS otherwise."""
        parts = []
        formulas = []
        for key, value in row.attributes.items():
            if type(value) is not str or type(key) is not str:
                return _NOT_TEXT_CELLS
            value = value.strip()
            if not value:
                continue
            if reason := self.limits.key_problem(key) or self.limits.value_problem(value):
                raise RowProblem(key, reason, value)
            known = self._scalars.get(value)
            if known is None:
                known = self._scalars[value] = _scalar_json(value)
            parts.append(f"{_json_string(key)}:{known[0]}")
            if known[1]:
                formulas.append((key, value))
        if reason := self.limits.too_many(len(parts)):
            raise RowProblem("attributes", reason, f"{len(parts)} keys")
        if formulas or (name is not None and name[:1] in FORMULA_STARTS) or (email and email[:1] in FORMULA_STARTS):
            self._warn_formulas(row, result, name, email, dict(formulas))
        return "{" + ",".join(parts) + "}" if parts else None

    @staticmethod
    def _attributes(packed, loose: dict[str, object]) -> dict:
        attributes: dict[str, object] = {}
        if isinstance(packed, str) and packed.strip():
            try:
                packed = json.loads(packed)
            except json.JSONDecodeError as exc:
                raise RowProblem("attributes", f"not a JSON object ({exc.msg})", packed) from None
        if packed not in (None, ""):
            if not isinstance(packed, dict):
                raise RowProblem("attributes", "attributes must be a JSON object", packed)
            attributes.update(packed)
        for key, value in loose.items():
            if type(value) is str:
                value = value.strip()
                if value:
                    attributes[key] = infer_scalar(value)
            elif value is not None:
                attributes[key] = value
        if None in attributes.values():
            return {key: value for key, value in attributes.items() if value is not None}
        return attributes

    @staticmethod
    def _warn_formulas(row: Row, result: ChunkResult, name, email, attributes: dict) -> None:
        for column, value in (("name", name), ("email", email), *attributes.items()):
            if type(value) is str and value[:1] in FORMULA_STARTS and escape_formula(value) != value:
                header = row.headers.get(column, column)
                reason = "looks like a spreadsheet formula; stored as text and escaped on export"
                result.problems.append((row.line, header, "warning", reason, _cut(value)))
                result.warnings += 1


_NOT_TEXT_CELLS = object()


def _text_reason(text: str) -> str | None:
    """Why PostgreSQL cannot store this text, or None."""
    found = BAD_TEXT_RE.search(text)
    if found is None:
        return None
    return NUL_REASON if found.group() == "\x00" else SURROGATE_REASON


def _value_reason(value, numbers: bool) -> str | None:
    """Why PostgreSQL cannot store a decoded JSON value, its nested keys and values included, or None.

    Without a stack of calls: a value nested as deep as the decoder allows must not raise RecursionError.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str:
            reason = _text_reason(item)
            if reason:
                return reason
        elif kind is float:
            if numbers and not math.isfinite(item):
                return NOT_FINITE_REASON
        elif kind is dict:
            pending.extend(item.keys())
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return None


def _unstorable(row: Row) -> RowProblem | None:
    """The row's first value PostgreSQL cannot store, as a problem; None when every one can be stored.

    Run only for a row whose COPY line or attributes showed a sign of one, so good rows are not walked.
    Cells other than attributes are stored as text, where a NaN is just the text 'nan'.
    """
    for kind, value in row.cells.items():
        decoded = value
        if kind == "attributes" and type(value) is str:
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                continue
        reason = _value_reason(decoded, numbers=kind == "attributes")
        if reason:
            return RowProblem(kind, reason, value)
    for key, value in row.attributes.items():
        reason = _text_reason(key) if type(key) is str else None
        if reason:
            return RowProblem(key, f"the key {reason}", key)
        reason = _value_reason(value, numbers=True)
        if reason:
            return RowProblem(key, reason, value)
    return None


def _json_scalar(value) -> str | None:
    """_to_json's text for a string, boolean, integer or finite float; None for anything else."""
    kind = type(value)
    if kind is str:
        return _json_string(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    return None


def _scalar_json(text: str) -> tuple[str, bool]:
    """A stripped text cell's value as JSON text (as _json_object writes it), and whether it looks like a formula."""
    value = infer_scalar(text)  # a string, boolean, integer or finite float
    formula = type(value) is str and value[:1] in FORMULA_STARTS and escape_formula(value) != value
    return _json_scalar(value), formula


def _json_object(attributes: dict) -> str:
    """_to_json's text for a flat object of strings, booleans, integers and finite floats, built directly.

    The per-row CSV case; anything else (nested JSON, NaN) goes through the JSON encoder, which raises
    ValueError for NaN and Infinity.
    """
    parts = []
    for key, value in attributes.items():
        text = _json_scalar(value)
        if text is None:
            return _to_json(attributes)
        parts.append(f"{_json_string(key) if type(key) is str else _to_json(str(key))}:{text}")
    return "{" + ",".join(parts) + "}"


def _cut(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:VALUE_CUT]


# --- chunks ----------------------------------------------------------------------------------


def process_chunk(chunk: Chunk, layout: Layout, buckets: int) -> ChunkResult:
    """Worker entry point: parse and validate one chunk."""
    result = ChunkResult(end_offset=chunk.end_offset)
    validator = RowValidator(buckets, layout.attribute_limits, layout.default_region)
    out = io.StringIO()
    if chunk.kind == "csv":
        rows = _csv_rows(chunk, layout, result, buckets, out.write)
    elif chunk.kind == "jsonl":
        rows = _jsonl_rows(chunk, result)
    else:
        rows = (_object_row(line, value, result) for line, value in chunk.data)
    for row in rows:
        if row is None:
            continue
        result.rows += 1
        copy_line = validator.validate(row, result)
        if copy_line is not None:
            out.write(copy_line)
    result.copy_data = out.getvalue().encode("utf-8")
    _storable_problems(result.problems)
    return result


def _storable_problems(problems: list[tuple[int, str, str, str, str]]) -> None:
    """Make each problem storable and printable: a NUL or lone surrogate in a column name, reason or value
    (a JSON key, a quoted cell) written as an escape, a column name cut to what ImportRowError takes."""
    for index, (line, column, level, reason, value) in enumerate(problems):
        if len(column) > COLUMN_CUT or BAD_TEXT_RE.search(column) or BAD_TEXT_RE.search(reason):
            problems[index] = (line, _printable(column)[:COLUMN_CUT], level, _printable(reason), _printable(value))
        elif BAD_TEXT_RE.search(value):
            problems[index] = (line, column, level, reason, _printable(value))


def _printable(text: str) -> str:
    """The text with each NUL written as \\x00 and each lone surrogate as \\udxxx, as Python escapes them."""
    if BAD_TEXT_RE.search(text) is None:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _decode_chunk(chunk: Chunk, result: ChunkResult) -> tuple[str, set[int]]:
    """Decode as UTF-8; lines that are not UTF-8 are read as Windows-1252 and remembered.

    NUL characters are kept: the readers report them (PostgreSQL cannot store one, and removing it could
    turn a garbled cell into a valid one without a word).
    """
    try:
        return chunk.data.decode("utf-8"), set()
    except UnicodeDecodeError:
        pass
    lines, fallback = [], set()
    for number, raw in enumerate(chunk.data.split(b"\n"), start=chunk.start_line):
        text, fell_back = decode_text(raw)
        if fell_back:
            fallback.add(number)
        lines.append(text)
    return "\n".join(lines), fallback


def _csv_rows(chunk: Chunk, layout: Layout, result: ChunkResult, buckets: int, write: Callable[[str], object]):
    """The chunk's records as Rows for RowValidator; those _CleanCsvRows settles are counted and written here."""
    text, fallback = _decode_chunk(chunk, result)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=layout.delimiter)
    width = max(column.index for column in layout.columns) + 1
    headers = {column.kind if column.kind != "attribute" else column.key: column.header for column in layout.columns}
    plan = _CsvPlan.of(layout.columns)
    fast = None if fallback else _CleanCsvRows(plan, buckets, result, headers["phone"], layout)
    nul = b"\x00" in chunk.data  # rare: only then is each record looked at for a NUL, which PostgreSQL refuses
    header_at = {column.index: column.header for column in layout.columns} if nul else {}
    consumed = 0
    while True:
        start = chunk.start_line + consumed
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            consumed = reader.line_num
            result.rows += 1
            result.invalid += 1
            result.problems.append((start, "", "error", f"not readable as CSV ({exc})", ""))
            continue
        consumed = reader.line_num
        if nul and any("\x00" in cell for cell in record):
            if not "".join(record).replace("\x00", "").strip():
                continue  # padding: a line of NULs is a blank line
            index = next(index for index, cell in enumerate(record) if "\x00" in cell)
            result.rows += 1
            result.invalid += 1
            result.problems.append((start, header_at.get(index, ""), "error", NUL_REASON, _cut(record[index])))
            continue
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        if len(record) > width and any(cell.strip() for cell in record[width:]):
            result.rows += 1
            result.invalid += 1
            reason = f"{len(record)} cells but the header has {width} columns (a stray delimiter or quote?)"
            result.problems.append((start, "", "error", reason, layout.delimiter.join(record)[:VALUE_CUT]))
            continue
        if fast is not None:
            copy_line = fast.copy_line(start, record)
            if copy_line is not None:
                result.rows += 1
                if copy_line:  # else an invalid phone, reported
                    result.valid += 1
                    write(copy_line)
                continue
        row = _csv_row(start, record, plan, headers)
        if fallback and any(start <= line < chunk.start_line + consumed for line in fallback):
            _warn_encoding(row, record, layout.columns, result)
        yield row


@dataclass(frozen=True)
class _CsvPlan:
    """Where each role's cells are in a record, worked out once a chunk instead of once a row."""

    cells: tuple[tuple[int, str], ...]
    topics: tuple[int, ...]
    attributes: tuple[tuple[int, str], ...]
    width: int

    @classmethod
    def of(cls, columns: tuple[Column, ...]) -> _CsvPlan:
        return cls(
            cells=tuple((c.index, c.kind) for c in columns if c.kind not in ("attribute", "topics")),
            topics=tuple(c.index for c in columns if c.kind == "topics"),
            attributes=tuple((c.index, c.key) for c in columns if c.kind == "attribute"),
            width=max((c.index for c in columns), default=-1) + 1,
        )


class _CleanCsvRows:
    """The COPY line of a CSV record that needs no message, without building a Row.

    A record with an invalid phone is reported here as RowValidator would report
    it. Any other record with something to report (an invalid cell, a
    formula-looking value) gets None and goes through RowValidator, which words
    the problem. For the rest the result is RowValidator's line, byte for byte
    (a test compares the two). Cells that repeat (zones, topics, attribute
    values) are settled once a chunk.
    """

    # The stage's text columns after the phone, in STAGE_COLUMNS order.
    SLOTS = ("name", "email", "channel", "locale", "timezone", "consent", "attributes", "topics")

    def __init__(self, plan: _CsvPlan, buckets: int, result: ChunkResult, phone_header: str, layout: Layout):
        self.buckets = buckets
        self.limits = layout.attribute_limits
        self.default_region = layout.default_region
        self.phone_header = phone_header
        self.result = result
        self.width = plan.width
        index = {kind: position for position, kind in plan.cells}
        self.usable = "attributes" not in index  # a packed JSON column goes the general way
        self.phone = index["phone"]
        # (slot, position, length limit, whether it is the e-mail) for the free-text cells
        self.free_text = [
            (self.SLOTS.index(kind), index[kind], LIMITS[kind], kind == "email")
            for kind in ("name", "email")
            if kind in index
        ]
        settlers = {"channel": _settle_channel, "locale": _settle_locale, "timezone": _settle_timezone}
        settlers["consent"] = _settle_consent
        # (slot, position, {cell: COPY text or False}, settle) for columns with few distinct values
        self.repeated = [
            (self.SLOTS.index(kind), index[kind], {}, settle) for kind, settle in settlers.items() if kind in index
        ]
        self.topic_columns = plan.topics
        self.topic_column = plan.topics[0] if len(plan.topics) == 1 else None
        self.topics: dict[str, tuple[str, tuple[str, ...]] | None] = {}
        # (position, {cell: '"key":value' escaped for COPY, '' when empty, False when formula-like}, '"key":')
        self.attributes = [(position, {}, _json_string(key) + ":") for position, key in plan.attributes]

    def copy_line(self, line: int, record: list[str]) -> str | None:
        """The record's COPY line; "" for a record with an invalid phone (reported here); None: RowValidator's turn."""
        if not self.usable or len(record) < self.width:
            return None
        raw_phone = record[self.phone]
        if not raw_phone.strip():
            return None
        try:
            phone = fast_normalize_phone(raw_phone, self.default_region)
        except InvalidPhone as exc:
            # What RowValidator reports first after an empty phone, word for word; normalising the
            # number again there would cost as much as all the other cells of a row.
            self.result.problems.append((line, self.phone_header, "error", exc.reason, _cut(raw_phone)))
            self.result.invalid += 1
            return ""
        texts = ["\\N"] * 8
        for slot, position, limit, email in self.free_text:
            text = record[position].strip()
            if not text:
                continue
            if len(text) > limit or text[0] in FORMULA_STARTS:
                return None
            if email:
                try:
                    _email_validator(text)
                except ValidationError:
                    return None
            texts[slot] = _copy_text(text)
        for slot, position, known, settle in self.repeated:
            cell = record[position]
            text = known.get(cell)
            if text is None:
                text = known[cell] = settle(cell)
            if text is False:
                return None
            texts[slot] = text
        if texts[2] == "\\N" and _says_whatsapp(raw_phone):
            texts[2] = "whatsapp"
        if self.attributes:
            attributes = self._attributes(record)
            if attributes is None:
                return None
            texts[6] = attributes
        if self.topic_columns:
            topics = self._topics(record)
            if topics is None:
                return None
            texts[7] = topics[0]
            if topics[1]:
                self.result.topics.update(topics[1])
        bucket = zlib.crc32(phone.encode()) % self.buckets
        return f"{line}\t{bucket}\t{phone}\t" + "\t".join(texts) + "\n"

    def _attributes(self, record: list[str]) -> str | None:
        parts = []
        for position, known, prefix in self.attributes:
            cell = record[position]
            part = known.get(cell)
            if part is None:
                part = known[cell] = _attribute_part(prefix, cell, self.limits.value_chars)
            if part:
                parts.append(part)
            elif part is False:
                return None  # a formula-looking or too long cell: RowValidator words it
        if not parts:
            return "\\N"
        # COPY escaping is character by character, so the parts escaped one by one make the escaped whole.
        text = "{" + ",".join(parts) + "}"
        # The escaped text is at least as long as the JSON: near the limit, RowValidator measures the JSON.
        return None if self.limits.size_problem(text) else text

    def _topics(self, record: list[str]) -> tuple[str, tuple[str, ...]] | None:
        if self.topic_column is not None:
            cell = record[self.topic_column]
        else:
            cell = "|".join([record[position] for position in self.topic_columns])
        if cell not in self.topics:
            try:
                names = _topics(cell)
            except RowProblem:
                self.topics[cell] = None
            else:
                text = _copy_text("{" + ",".join(names) + "}") if names else "\\N"
                self.topics[cell] = (text, tuple(names))
        return self.topics[cell]


def _attribute_part(prefix: str, cell: str, value_chars: int) -> str | bool:
    value = cell.strip()
    if not value:
        return ""
    if len(value) > value_chars:
        return False
    text, formula = _scalar_json(value)
    return False if formula else _copy_text(prefix + text)


def _says_whatsapp(raw_phone: str) -> bool:
    """A phone written "whatsapp:+254..." names its channel when no channel column does."""
    return raw_phone.lstrip()[:9].lower() == "whatsapp:"


# A repeated cell's COPY text as RowValidator would write it, or False when RowValidator has something to say.


def _settle_channel(cell: str) -> str | bool:
    text = cell.strip().lower()
    if not text:
        return "\\N"
    return text if text in CHANNELS else False


def _settle_locale(cell: str) -> str | bool:
    text = cell.strip()
    if not text:
        return "\\N"
    return _copy_text(text) if len(text) <= LIMITS["locale"] else False


def _settle_timezone(cell: str) -> str | bool:
    text = cell.strip()
    if not text:
        return "\\N"
    return _copy_text(text) if len(text) <= LIMITS["timezone"] and _timezone_ok(text) else False


def _settle_consent(cell: str) -> str | bool:
    if cell == "":
        return "\\N"
    return CONSENT_WORDS.get(cell.strip().lower(), False)


def _csv_row(line: int, record: list[str], plan: _CsvPlan, headers: dict[str, str]) -> Row:
    if len(record) < plan.width:
        record = record + [""] * (plan.width - len(record))
    cells: dict[str, object] = {kind: record[index] for index, kind in plan.cells}
    if plan.topics:
        cells["topics"] = "|".join(record[index] for index in plan.topics)
    attributes: dict[str, object] = {key: record[index] for index, key in plan.attributes}
    return Row(line, cells, attributes, headers)


def _warn_encoding(row: Row, record: list[str], columns: tuple[Column, ...], result: ChunkResult) -> None:
    column, value = "", ""
    for candidate in columns:
        if candidate.index < len(record) and not record[candidate.index].isascii():
            column, value = candidate.header, record[candidate.index]
            break
    reason = "not valid UTF-8; read as Windows-1252 (save the file as 'CSV UTF-8' to be sure)"
    result.problems.append((row.line, column, "warning", reason, value[:VALUE_CUT]))
    result.warnings += 1


def _jsonl_rows(chunk: Chunk, result: ChunkResult):
    text, fallback = _decode_chunk(chunk, result)
    nul = "\x00" in text
    for line, raw in enumerate(text.split("\n"), start=chunk.start_line):
        raw = raw.strip()
        if not raw or (nul and not raw.replace("\x00", "").strip()):
            continue  # a line of NULs (padding) is a blank line; a NUL elsewhere makes the line malformed JSON
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError; an integer of over 4300 digits; nesting
            result.rows += 1
            result.invalid += 1
            if isinstance(exc, json.JSONDecodeError):
                reason = f"malformed JSON at character {exc.colno}: {exc.msg}"
            else:
                reason = f"not readable as JSON ({str(exc).split(';')[0]})"
            result.problems.append((line, "", "error", reason, raw[:VALUE_CUT]))
            continue
        row = _object_row(line, value, result)
        if row is not None and line in fallback:
            result.problems.append((line, "", "warning", "not valid UTF-8; read as Windows-1252", raw[:VALUE_CUT]))
            result.warnings += 1
        yield row


def _object_row(line: int, value, result: ChunkResult) -> Row | None:
    from audience.ingest.readers import column_for

    if not isinstance(value, dict):
        result.rows += 1
        result.invalid += 1
        result.problems.append((line, "", "error", "expected a JSON object", _cut(value)))
        return None
    cells: dict[str, object] = {}
    attributes: dict[str, object] = {}
    headers: dict[str, str] = {}
    for index, (key, cell) in enumerate(value.items()):
        column = column_for(index, str(key))
        if column.kind == "attribute":
            attributes[column.key] = cell
        else:
            cells[column.kind] = cell
            headers[column.kind] = str(key)
    if "phone" not in cells:
        result.rows += 1
        result.invalid += 1
        result.problems.append((line, "phone", "error", "the object has no phone key", _cut(value)))
        return None
    return Row(line, cells, attributes, headers, decoded=True)
