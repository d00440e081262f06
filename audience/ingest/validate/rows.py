"""One row to one COPY line for the stage, or to the problem that keeps it out.

Every row goes through RowValidator, whatever the file's format and whether it is imported or
previewed. It is made once per chunk: cells that repeat down a column (channels, locales, zones,
consents, topics, attribute values) are settled once per distinct text, problems included, which
is what keeps a million-row CSV file cheap.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Set

from audience.attributes import AttributeLimits
from audience.choices import Channel
from audience.ingest.validate import cells
from audience.ingest.validate.copy_text import JSON_NUL, NULL, copy_text
from audience.ingest.validate.records import ChunkResult, Row, RowProblem, cut
from audience.ingest.validate.storable import BAD_TEXT_RE, NOT_FINITE_REASON, text_reason, unstorable
from audience.phones import InvalidPhone, normalize_phone, shortcut

# An attribute's '"key":value' JSON text; with its value when a spreadsheet would run it; or its problem.
Part = str | tuple[str, object] | RowProblem
_NOTHING: frozenset[str] = frozenset()
_crc32 = zlib.crc32
_NOT_FINITE = RowProblem("attributes", NOT_FINITE_REASON)  # a part whose value JSON cannot write (NaN)


def _topics_text(value: object) -> tuple[str, tuple[str, ...]]:
    """The topics' COPY text (a PostgreSQL array) and names."""
    names = cells.topic_names(value)
    return (copy_text("{" + ",".join(names) + "}"), tuple(names)) if names else (NULL, ())


# The rules of the roles between the e-mail and the attributes (channel ... topics), in ROLES order.
_SETTLED_RULES = (cells.channel_text, cells.locale_text, cells.timezone_text, cells.consent_text, _topics_text)


class _Parts(dict):
    """One attribute key's text cells, each with its part: made when first asked for, then kept.

    A dict whose misses make the part lets a record's cells be looked up in one C loop (map).
    """

    __slots__ = ("key", "key_problem", "limits", "prefix")

    def __init__(self, key: str, limits: AttributeLimits):
        super().__init__()
        self.key, self.limits = key, limits
        self.prefix, self.key_problem = f"{cells.json_string(key)}:", limits.key_problem(key)

    def __missing__(self, cell: str) -> Part | None:
        """A text cell's part, its value typed as the person meant (infer_scalar); None when empty."""
        text = cell.strip()
        part: Part | None
        if not text:
            part = None
        elif reason := self.key_problem or self.limits.value_problem(text):
            part = RowProblem(self.key, reason, text)
        else:
            value = cells.infer_scalar(text)
            part = self.prefix + cells.json_value(value)
            if type(value) is str and value[:1] in cells.FORMULA_STARTS and cells.is_formula(value):
                part = (part, value)
        self[cell] = part
        return part


_part_of = dict.__getitem__  # calls _Parts.__missing__ for a cell not seen before


class RowValidator:
    def __init__(self, buckets: int, limits: AttributeLimits | None = None, default_region: str = ""):
        self.buckets = buckets
        self.limits = limits or AttributeLimits()
        self.default_region = default_region
        # (rule, {cell: what the rule made of it}) for the roles settled once per distinct text, in ROLES order
        self._settle_plan: list[tuple[Callable[[object], object], dict]] = [(rule, {}) for rule in _SETTLED_RULES]
        self._memo: dict[str, _Parts] = {}  # each attribute text cell's part, by key and cell
        self._memo_keys: tuple[str, ...] | None = None  # the last CSV record's attribute keys, and their memos
        self._key_memos: list[_Parts] = []
        self._surely_small = self.limits.total_bytes // 4
        self._combinations: dict[tuple, list | RowProblem] = {}  # the settled roles' texts, by their cells

    def validate(self, row: Row, result: ChunkResult) -> str | None:
        """Return the COPY line for a good row, recording its warnings; record the problem of a bad one."""
        attributes = row.attributes
        keys, attribute_values = tuple(attributes), tuple(attributes.values())
        return self.validate_cells(row.line, row.values, keys, attribute_values, row.headers, result, row.decoded)

    def validate_cells(
        self,
        line: int,
        values: tuple[object, ...],
        keys: tuple[str, ...],
        attribute_values: tuple[object, ...],
        headers: dict[str, str],
        result: ChunkResult,
        decoded: bool = False,
    ) -> str | None:
        """validate() for a row given as its cells: a CSV record is validated as read, without a Row.

        ``values``: a cell for each of ROLES; ``attribute_values``: the attribute cells, one for each of
        ``keys`` (a CSV file's rows share one keys tuple, and with it the memos prepared for its keys).
        """
        warnings: list[tuple[str, object]] = []
        try:
            raw_phone, name, email, packed = values[0], values[1], values[2], values[8]
            # normalize_phone's own first step for "+<digits>", the spelling of most rows, without its calls
            spelled = raw_phone.strip() if type(raw_phone) is str and not decoded else ""
            phone = shortcut.e164(spelled) if spelled[:1] == "+" else None
            if phone is None:
                phone = self._phone(raw_phone, decoded)
            name = cells.clean_text("name", name)
            if email is not None:
                email = cells.email(email)
            starts = cells.FORMULA_STARTS
            if name is not None and name[:1] in starts and cells.is_formula(name):
                warnings.append(("name", name))
            if email is not None and email[:1] in starts and cells.is_formula(email):
                warnings.append(("email", email))
            settling = values[3:8]
            if decoded:  # JSON values: each settled by itself (1 and True are equal keys, lists none)
                settled = self._settled(settling)
            else:  # text: rows share their few combinations of these cells, settled once each
                settled = self._combinations.get(settling)
                if settled is None:
                    settled = self._combinations[settling] = _settled_or_problem(self._settled, settling)
                if isinstance(settled, RowProblem):
                    raise settled.with_traceback(None)  # a fresh traceback: the problem is raised once per row
            channel, locale, timezone, consent, (topics_text, topics) = settled
            if channel == NULL and spelled[:1] != "+" and _names_whatsapp(raw_phone):
                channel = Channel.WHATSAPP.value  # a phone written "whatsapp:+254..." names its channel
            attributes = self._attributes(values, keys, attribute_values, decoded, warnings)
            if attributes is None:
                attributes = NULL
            else:
                # A character takes at most 4 bytes: shorter texts are within the limit without being measured.
                if len(attributes) > self._surely_small and (reason := self.limits.size_problem(attributes)):
                    raise RowProblem("attributes", reason, attributes)
                attributes = copy_text(attributes)
            bucket = _crc32(phone.encode()) % self.buckets
            copy_line = (
                f"{line}\t{bucket}\t{phone}\t{NULL if name is None else copy_text(name)}\t"
                f"{NULL if email is None else copy_text(email)}\t{channel}\t{locale}\t{timezone}\t{consent}\t"
                f"{attributes}\t{topics_text}\n"
            )
            # Decoded JSON (a JSON row, a CSV column of packed JSON) may hold what PostgreSQL cannot store.
            # Substring tests are ~20 times faster than one regular expression; only non-ASCII can be a surrogate.
            if (decoded or packed) and (
                JSON_NUL in copy_line
                or "\x00" in copy_line
                or (not copy_line.isascii() and BAD_TEXT_RE.search(copy_line) is not None)
            ):
                unstored = unstorable(values, dict(zip(keys, attribute_values, strict=True)))
                if unstored is not None:
                    raise unstored
        except RowProblem as problem:
            column = headers.get(problem.column, problem.column)
            result.problems.append((line, column, "error", problem.reason, cut(problem.value)))
            result.invalid += 1
            return None
        if warnings:  # only a row that is stored gets them
            for column, value in warnings:
                header = headers.get(column, column)
                result.problems.append((line, header, "warning", cells.FORMULA_REASON, cut(value)))
            result.warnings += len(warnings)
        result.valid += 1
        if topics:
            result.topics.update(topics)
        return copy_line

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

    def _attributes(
        self,
        values: tuple[object, ...],
        keys: tuple[str, ...],
        attribute_values: tuple[object, ...],
        decoded: bool,
        warnings: list[tuple[str, object]],
    ) -> str | None:
        """The attributes' JSON text (None for none): the packed JSON object, then the attribute cells over it.

        Checked in this order: the number of attributes, each one's name and value in turn, a number
        JSON cannot write, then (the caller's) the size of the whole.
        """
        packed = values[8]
        found: list[Part | None]
        if not decoded and (packed is None or packed == ""):  # a CSV record's text cells, the common case
            if keys is not self._memo_keys:
                self._memo_keys, self._key_memos = keys, [self._parts(key) for key in keys]
            found = list(map(_part_of, self._key_memos, attribute_values))
            found_keys: tuple[str, ...] | list[str] = keys
        else:
            items: Iterable[tuple[str, object]]
            verbatim: Set[str]
            if packed is None or packed == "":
                items, verbatim = zip(keys, attribute_values, strict=True), _NOTHING
            else:
                merged, verbatim = _merged(_packed(packed), dict(zip(keys, attribute_values, strict=True)))
                items = merged.items()
            found, found_keys = [], []
            for key, value in items:
                found_keys.append(key)
                # A packed JSON string is taken as written; a cell's text is typed.
                if type(value) is str and key not in verbatim:
                    found.append(self._parts(key)[value])
                else:
                    found.append(self._value_part(key, value))
        problem = None
        try:
            joined = ",".join(found)  # type: ignore[arg-type]
            count = len(found)
        except TypeError:  # not all strings: an empty cell, a formula-like value or a problem, looked at in order
            parts: list[str] = []
            count = 0
            for key, part in zip(found_keys, found, strict=True):
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
            joined = ",".join(parts)
        if count > self.limits.max_keys:
            raise RowProblem("attributes", self.limits.too_many(count) or "", f"{count} keys")
        if problem is _NOT_FINITE:
            loose = dict(zip(keys, attribute_values, strict=True))
            raise unstorable(values, loose) or RowProblem("attributes", NOT_FINITE_REASON, loose)
        if problem is not None:
            raise problem.with_traceback(None)  # type: ignore[union-attr]
        return "{" + joined + "}" if joined else None  # a part is never empty

    def _parts(self, key: str) -> _Parts:
        """The parts of the key's text cells, made as they are first asked for."""
        parts = self._memo.get(key)
        if parts is None:
            parts = self._memo[key] = _Parts(key, self.limits)
        return parts

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


def _names_whatsapp(raw_phone: object) -> bool:
    """Whether a phone is written "whatsapp:+254...", which names its channel."""
    text = raw_phone if type(raw_phone) is str else str(raw_phone)
    return ":" in text and text.lstrip()[:9].lower() == "whatsapp:"


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
