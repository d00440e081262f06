"""One row to one COPY line for the stage, or to the problem that keeps it out.

Every row goes through RowValidator, whatever the file's format and whether it is imported or
previewed. It is made once per chunk: cells that repeat down a column (channels, locales, zones,
consents, topics, attribute values) are settled once per distinct text, problems included, which
is what keeps a million-row CSV file cheap.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable

from audience.attributes import AttributeLimits
from audience.choices import Channel
from audience.ingest.validate import cells
from audience.ingest.validate.copy_text import JSON_NUL, NULL, copy_text
from audience.ingest.validate.records import ChunkResult, Row, RowProblem, cut
from audience.ingest.validate.storable import BAD_TEXT_RE, NOT_FINITE_REASON, text_reason, unstorable
from audience.phones import InvalidPhone, normalize_phone

# An attribute's '"key":value' JSON text; with its value when a spreadsheet would run it; or its problem.
Part = str | tuple[str, object] | RowProblem
_UNSEEN = object()
_NOTHING: frozenset[str] = frozenset()
_NOT_FINITE = RowProblem("attributes", NOT_FINITE_REASON)  # a part whose value JSON cannot write (NaN)


def _topics_text(value: object) -> tuple[str, tuple[str, ...]]:
    """The topics' COPY text (a PostgreSQL array) and names."""
    names = cells.topic_names(value)
    return (copy_text("{" + ",".join(names) + "}"), tuple(names)) if names else (NULL, ())


# The rules of the roles between the e-mail and the attributes (channel ... topics), in ROLES order.
_SETTLED_RULES = (cells.channel_text, cells.locale_text, cells.timezone_text, cells.consent_text, _topics_text)


class RowValidator:
    def __init__(self, buckets: int, limits: AttributeLimits | None = None, default_region: str = ""):
        self.buckets = buckets
        self.limits = limits or AttributeLimits()
        self.default_region = default_region
        # (rule, {cell: what the rule made of it}) for the roles settled once per distinct text, in ROLES order
        self._settle_plan: list[tuple[Callable[[object], object], dict]] = [(rule, {}) for rule in _SETTLED_RULES]
        self._memo: dict[str, dict[str, Part | None]] = {}  # each attribute text cell's part, by key and cell
        self._keys: dict[str, tuple[str, str | None]] = {}  # each attribute key's '"key":' and its problem
        self._combinations: dict[tuple, list | RowProblem] = {}  # the settled roles' texts, by their cells

    def validate(self, row: Row, result: ChunkResult) -> str | None:
        """Return the COPY line for a good row, recording its warnings; record the problem of a bad one."""
        warnings: list[tuple[str, object]] = []
        try:
            line, topics = self._copy_line(row, warnings)
        except RowProblem as problem:
            column = row.headers.get(problem.column, problem.column)
            result.problems.append((row.line, column, "error", problem.reason, cut(problem.value)))
            result.invalid += 1
            return None
        for column, value in warnings:  # only a row that is stored gets them
            header = row.headers.get(column, column)
            result.problems.append((row.line, header, "warning", cells.FORMULA_REASON, cut(value)))
        result.warnings += len(warnings)
        result.valid += 1
        if topics:
            result.topics.update(topics)
        return line

    def _copy_line(self, row: Row, warnings: list[tuple[str, object]]) -> tuple[str, tuple[str, ...]]:
        """The row's COPY line and its topics; its formula-like values go to ``warnings``. Raises RowProblem."""
        values = row.values
        raw_phone, name, email, packed = values[0], values[1], values[2], values[8]
        phone = self._phone(raw_phone, row.decoded)
        name = cells.clean_text("name", name)
        if email is not None:
            email = cells.email(email)
        for column, text in (("name", name), ("email", email)):
            if text is not None and text[:1] in cells.FORMULA_STARTS and cells.is_formula(text):
                warnings.append((column, text))
        settling = values[3:8]
        if row.decoded:  # JSON values: each settled by itself (1 and True are equal keys, lists none)
            settled = self._settled(settling)
        else:  # text: rows share their few combinations of these cells, settled once each
            settled = self._combinations.get(settling)
            if settled is None:
                settled = self._combinations[settling] = _settled_or_problem(self._settled, settling)
            if isinstance(settled, RowProblem):
                raise settled.with_traceback(None)  # a fresh traceback: the problem is raised once per row
        channel, locale, timezone, consent, (topics_text, topics) = settled
        if channel == NULL and str(raw_phone).lstrip()[:9].lower() == "whatsapp:":
            channel = Channel.WHATSAPP.value  # a phone written "whatsapp:+254..." names its channel
        attributes = self._attributes(row, packed, warnings)
        if attributes is not None and (reason := self.limits.size_problem(attributes)):
            raise RowProblem("attributes", reason, attributes)
        bucket = zlib.crc32(phone.encode()) % self.buckets
        line = (
            f"{row.line}\t{bucket}\t{phone}\t{copy_text(name)}\t{copy_text(email)}\t{channel}\t{locale}\t"
            f"{timezone}\t{consent}\t{copy_text(attributes)}\t{topics_text}\n"
        )
        # Decoded JSON (a JSON row, a CSV column of packed JSON) may hold what PostgreSQL cannot store.
        # Substring tests are ~20 times faster than one regular expression; only non-ASCII can be a surrogate.
        if (row.decoded or packed) and (
            JSON_NUL in line or "\x00" in line or (not line.isascii() and BAD_TEXT_RE.search(line) is not None)
        ):
            problem = unstorable(row)
            if problem is not None:
                raise problem
        return line, topics

    def _phone(self, raw_phone: object, decoded: bool) -> str:
        if decoded and type(raw_phone) is str and (reason := text_reason(raw_phone)):
            raise RowProblem("phone", reason, raw_phone)  # before normalising, which would drop the character
        try:
            return normalize_phone(raw_phone, self.default_region)  # type: ignore[arg-type]
        except InvalidPhone as exc:
            blank = raw_phone is None or not str(raw_phone).strip()  # a blank cell quotes nothing
            raise RowProblem("phone", exc.reason, "" if blank else raw_phone) from None

    def _settled(self, values: tuple[object, ...]) -> list:
        """The COPY texts of the channel, locale, timezone and consent cells, and the topics' text and names.

        Each distinct text is settled once a chunk, a problem included.
        """
        settled = []
        for (rule, known), value in zip(self._settle_plan, values, strict=True):
            if value is None or type(value) is str:
                result = known.get(value)
                if result is None:
                    try:
                        result = known[value] = rule(value)
                    except RowProblem as problem:
                        result = known[value] = problem
                if isinstance(result, RowProblem):
                    raise result.with_traceback(None)  # a fresh traceback: the problem is raised once per row
            else:
                result = rule(value)
            settled.append(result)
        return settled

    def _attributes(self, row: Row, packed: object, warnings: list[tuple[str, object]]) -> str | None:
        """The attributes' JSON text (None for none): the packed JSON object, then the attribute cells over it.

        Checked in this order: the number of attributes, each one's name and value in turn, a number
        JSON cannot write, then (the caller's) the size of the whole.
        """
        if packed is None or packed == "":
            items, verbatim = row.attributes, _NOTHING
        else:
            items, verbatim = _merged(_packed(packed), row.attributes)
        parts: list[str] = []
        count = 0
        problem = None
        memo = self._memo
        for key, value in items.items():
            if type(value) is str and key not in verbatim:
                known = memo.get(key)
                part = known.get(value, _UNSEEN) if known is not None else _UNSEEN
                if part is _UNSEEN:
                    part = self._text_part(key, value)
            else:
                part = self._value_part(key, value)
            if part is None:
                continue
            count += 1
            if type(part) is str:
                parts.append(part)
            elif type(part) is tuple:
                parts.append(part[0])
                warnings.append((key, part[1]))
            elif problem is None or problem is _NOT_FINITE:
                problem = part
        if count > self.limits.max_keys:
            raise RowProblem("attributes", self.limits.too_many(count) or "", f"{count} keys")
        if problem is _NOT_FINITE:
            raise unstorable(row) or RowProblem("attributes", NOT_FINITE_REASON, row.attributes)
        if problem is not None:
            raise problem.with_traceback(None)  # type: ignore[attr-defined]
        return "{" + ",".join(parts) + "}" if parts else None

    def _text_part(self, key: str, cell: str) -> Part | None:
        """A text cell's part, its value typed as the person meant (infer_scalar); None when empty. Kept per cell."""
        known = self._keys.get(key)
        if known is None:
            known = self._keys[key] = (f"{cells.json_string(key)}:", self.limits.key_problem(key))
        prefix, key_problem = known
        text = cell.strip()
        part: Part | None
        if not text:
            part = None
        elif reason := key_problem or self.limits.value_problem(text):
            part = RowProblem(key, reason, text)
        else:
            value = cells.infer_scalar(text)
            part = prefix + cells.json_value(value)
            if type(value) is str and value[:1] in cells.FORMULA_STARTS and cells.is_formula(value):
                part = (part, value)
        self._memo.setdefault(key, {})[cell] = part
        return part

    def _value_part(self, key: str, value: object) -> Part | None:
        """A decoded JSON value's part, None for null."""
        if value is None:
            return None
        if reason := self.limits.key_problem(key) or self.limits.value_problem(value):
            return RowProblem(key, reason, value if type(value) is str else "")
        try:
            text = cells.json_value(value)
        except ValueError:  # NaN or Infinity, somewhere in the value
            return _NOT_FINITE
        part = f"{cells.json_string(key)}:{text}"
        return (part, value) if cells.is_formula(value) else part


def _settled_or_problem(settle: Callable[[tuple[object, ...]], list], values: tuple[object, ...]) -> list | RowProblem:
    try:
        return settle(values)
    except RowProblem as problem:
        return problem


def _merged(packed: dict, loose: dict[str, object]) -> tuple[dict, set[str]]:
    """The packed object with the attribute cells over it, each in its key's place; and the keys whose
    text is the packed object's own (a JSON string is taken as written, a cell's text is typed)."""
    merged = dict(packed)
    verbatim = set(packed)
    for key, value in loose.items():
        if value is not None and not (type(value) is str and not value.strip()):
            merged[key] = value
            verbatim.discard(key)
    return merged, verbatim


def _packed(packed: object) -> dict:
    """The attributes column: a JSON object, or its text."""
    if isinstance(packed, str) and packed.strip():
        try:
            packed = json.loads(packed)
        except json.JSONDecodeError as exc:
            raise RowProblem("attributes", f"not a JSON object ({exc.msg})", packed) from None
    if not isinstance(packed, dict):
        raise RowProblem("attributes", "attributes must be a JSON object", packed)
    return packed
