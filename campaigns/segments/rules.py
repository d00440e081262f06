"""The segment rule tree: fields, operators, types, and validation into a typed tree.

A rule is JSON::

    {"all": [rule, ...]}                                   every rule matches
    {"any": [rule, ...]}                                   at least one rule matches
    {"not": rule}                                          the rule does not match
    {"field": "attributes.age", "op": "gte", "value": 18}  a leaf
    {"field": "attributes.code", "op": "eq", "value": "18", "type": "string"}   a declared type

Decisions the rest of the code relies on:

- An empty rule (``{}``, ``{"all": []}``, ``{"any": []}``) is an error, never "everyone". A
  segment of all opted-in contacts is written out: ``ALL_OPTED_IN`` (``consent_status = "opted_in"``).
- Every leaf is true or false for every contact, never unknown: a missing attribute, or one of
  another type, simply does not match a positive comparison. ``neq``, ``not_in`` and
  ``not_exists`` are exactly the negation of ``eq``, ``in`` and ``exists``, so ``{"not": leaf}``
  is the complement of the leaf (``city != "Nairobi"`` includes contacts without a city).
- An attribute's type is declared with ``"type"`` or inferred from the value: a JSON number is a
  number, true/false a boolean; a string is a date when it is an ISO date ("2026-01-01"), or a
  relative one ("30 days ago") with an ordering operator (gt, gte, lt, lte, between), and always
  with before/after; with in, not_in, contains and icontains, and any other string, it is a string.
- Dates are calendar days in the project's time zone (settings.TIME_ZONE). Relative values are
  resolved when the rule is compiled: "today", "yesterday", "N days|weeks|months|years ago" give
  a day; "now", "N hours|minutes ago" and ISO datetimes give an instant. On a datetime column a
  day covers the whole day: ``before D`` is earlier than D's first moment, ``after D`` is from
  the day after D, ``between [A, B]`` includes both days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from typing import Any

from django.utils import timezone

from audience.models import Channel, ConsentStatus
from audience.phones import InvalidPhone, normalize_phone

NUMBER, STRING, BOOLEAN, DATE, TOPIC, ANY = "number", "string", "boolean", "date", "topic", "any"
ATTRIBUTE_TYPES = (NUMBER, STRING, BOOLEAN, DATE)
ATTRIBUTES_PREFIX = "attributes."

OPS_BY_TYPE: dict[str, tuple[str, ...]] = {
    NUMBER: ("eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "between", "exists", "not_exists"),
    STRING: ("eq", "neq", "in", "not_in", "contains", "icontains", "exists", "not_exists"),
    BOOLEAN: ("eq", "neq", "exists", "not_exists"),
    DATE: ("eq", "neq", "gt", "gte", "lt", "lte", "between", "before", "after", "exists", "not_exists"),
    TOPIC: ("eq", "neq", "in", "not_in", "exists", "not_exists"),
}
ALL_OPS = ("eq", "neq", "in", "not_in", "contains", "icontains", "gt", "gte", "lt", "lte", "between")
ALL_OPS += ("before", "after", "exists", "not_exists")
NO_VALUE_OPS = ("exists", "not_exists")
LIST_OPS = ("in", "not_in")
ORDERING_OPS = ("gt", "gte", "lt", "lte", "between", "before", "after")
MAX_LIST = 1000
MAX_DEPTH = 20
MAX_LEAVES = 500
MAX_STRING = 500

ALL_OPTED_IN: dict[str, Any] = {"field": "consent_status", "op": "eq", "value": ConsentStatus.OPTED_IN.value}


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    type: str
    ops: tuple[str, ...]
    choices: tuple[str, ...] = ()


_STRING_OPS = OPS_BY_TYPE[STRING]
_CHOICE_OPS = ("eq", "neq", "in", "not_in")
FIELDS: dict[str, FieldSpec] = {
    "name": FieldSpec(STRING, _STRING_OPS),
    "email": FieldSpec(STRING, _STRING_OPS),
    "phone": FieldSpec(STRING, _STRING_OPS),
    "locale": FieldSpec(STRING, _STRING_OPS),
    "timezone": FieldSpec(STRING, _STRING_OPS),
    "channel": FieldSpec(STRING, _CHOICE_OPS, tuple(Channel.values)),
    "consent_status": FieldSpec(STRING, _CHOICE_OPS, tuple(ConsentStatus.values)),
    "created_at": FieldSpec(DATE, tuple(op for op in OPS_BY_TYPE[DATE] if op not in NO_VALUE_OPS)),
    "last_inbound_at": FieldSpec(DATE, OPS_BY_TYPE[DATE]),
    "topic": FieldSpec(TOPIC, OPS_BY_TYPE[TOPIC]),
}


class RuleError(ValueError):
    """A rule was refused. ``path`` locates the node ("all[1]"), ``key`` the part ("value")."""

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path, self.key, self.message = path, key, message
        super().__init__(f"{self.location}: {message}")

    @property
    def location(self) -> str:
        if not self.key:
            return self.path or "rule"
        return f"{self.path}.{self.key}" if self.path else self.key


# --- The typed tree ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Leaf:
    field: str  # "name", "topic" or "attributes.<key>"
    op: str
    type: str
    value: Any  # a scalar, a tuple (in, not_in, between) or None (exists, not_exists)
    declared: bool = False

    @property
    def attribute(self) -> str | None:
        return self.field[len(ATTRIBUTES_PREFIX) :] if self.field.startswith(ATTRIBUTES_PREFIX) else None


@dataclasses.dataclass(frozen=True)
class Group:
    kind: str  # "all" or "any"
    children: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Not:
    child: Node


Node = Leaf | Group | Not


def to_json(node: Node) -> dict[str, Any]:
    """The canonical JSON of a validated tree (what a Segment stores)."""
    if isinstance(node, Group):
        return {node.kind: [to_json(child) for child in node.children]}
    if isinstance(node, Not):
        return {"not": to_json(node.child)}
    data: dict[str, Any] = {"field": node.field, "op": node.op}
    if node.op not in NO_VALUE_OPS:
        data["value"] = list(node.value) if isinstance(node.value, tuple) else node.value
    if node.declared:
        data["type"] = node.type
    return data


def leaves(node: Node):
    if isinstance(node, Leaf):
        yield node
    elif isinstance(node, Group):
        for child in node.children:
            yield from leaves(child)
    else:
        yield from leaves(node.child)


# --- Dates ---------------------------------------------------------------------------------

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
RELATIVE = re.compile(r"^(\d{1,5})\s+(minute|hour|day|week|month|year)s?\s+ago$", re.IGNORECASE)
NAMED_DAYS = {"today": 0, "yesterday": 1}


def is_date_text(text: str, *, relative: bool = True) -> bool:
    try:
        parse_date_text(text, allow_relative=relative)
    except ValueError:
        return False
    return True


def parse_date_text(text: str, *, allow_relative: bool = True) -> None:
    """Raise ValueError unless ``text`` is a date value this language understands."""
    value = text.strip().lower()
    if allow_relative and (value in NAMED_DAYS or value == "now" or RELATIVE.match(value)):
        return
    if ISO_DATE.match(value):
        dt.date.fromisoformat(value)
        return
    if "t" in value and re.match(r"^\d{4}-\d{2}-\d{2}t\d{2}:\d{2}", value):
        dt.datetime.fromisoformat(text.strip())
        return
    raise ValueError(text)


def resolve_date(text: str, now: dt.datetime) -> dt.date | dt.datetime:
    """A day (dt.date) or an aware instant (dt.datetime) for a valid date value at ``now``."""
    value = text.strip().lower()
    today = timezone.localdate(now)
    if value in NAMED_DAYS:
        return today - dt.timedelta(days=NAMED_DAYS[value])
    if value == "now":
        return now
    match = RELATIVE.match(value)
    if match:
        return _ago(int(match[1]), match[2].lower(), now, today)
    if ISO_DATE.match(value):
        return dt.date.fromisoformat(value)
    moment = dt.datetime.fromisoformat(text.strip())
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


def _ago(amount: int, unit: str, now: dt.datetime, today: dt.date) -> dt.date | dt.datetime:
    if unit in ("minute", "hour"):
        return now - dt.timedelta(**{f"{unit}s": amount})
    if unit in ("day", "week"):
        return today - dt.timedelta(**{f"{unit}s": amount})
    months = amount * (12 if unit == "year" else 1)
    year, month = divmod(today.year * 12 + today.month - 1 - months, 12)
    month += 1
    last_day = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(max(year, 1), month, min(today.day, last_day))


# --- Validation ----------------------------------------------------------------------------


def validate(tree: Any) -> Node:
    """Check a JSON rule tree and return its typed form; raise RuleError naming what is wrong."""
    if tree is None or tree == {} or tree == []:
        raise RuleError("", "", 'the rule is empty; write consent_status = "opted_in" to mean every opted-in contact')
    counter = [0]
    return _validate_node(tree, "", 0, counter)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _validate_node(node: Any, path: str, depth: int, counter: list[int]) -> Node:
    if depth > MAX_DEPTH:
        raise RuleError(path, "", f"the rule is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, dict):
        raise RuleError(path, "", f"expected an object (all, any, not or a field rule), got {_show(node)}")
    groups = [key for key in ("all", "any", "not") if key in node]
    if groups and (len(node) > 1 or len(groups) > 1):
        raise RuleError(path, "", f"a group has exactly one key ({groups[0]}), got {', '.join(sorted(node))}")
    if not groups:
        counter[0] += 1
        if counter[0] > MAX_LEAVES:
            raise RuleError(path, "", f"the rule has more than {MAX_LEAVES} conditions")
        return _validate_leaf(node, path)
    kind = groups[0]
    if kind == "not":
        return Not(_validate_node(node["not"], _join(path, "not"), depth + 1, counter))
    children = node[kind]
    if not isinstance(children, list) or not children:
        raise RuleError(path, kind, f"expected a non-empty list of rules, got {_show(children)}")
    prefix = _join(path, kind)
    return Group(
        kind, tuple(_validate_node(child, f"{prefix}[{i}]", depth + 1, counter) for i, child in enumerate(children))
    )


def _validate_leaf(node: dict[str, Any], path: str) -> Leaf:
    unknown = sorted(set(node) - {"field", "op", "value", "type"})
    if unknown:
        raise RuleError(path, unknown[0], "unknown key; a rule has all, any, not, or field, op, value and type")
    field = node.get("field")
    if not isinstance(field, str) or not field:
        raise RuleError(path, "field", f"expected a field name, got {_show(field)}")
    op = node.get("op")
    if op not in ALL_OPS:
        raise RuleError(path, "op", f"unknown operator {_show(op)}; use one of {', '.join(ALL_OPS)}")
    if op in NO_VALUE_OPS:
        if node.get("value") is not None:
            raise RuleError(path, "value", f"{op} takes no value, got {_show(node['value'])}")
    elif node.get("value") is None:
        raise RuleError(path, "value", f"{op} needs a value")
    if field.startswith(ATTRIBUTES_PREFIX):
        return _validate_attribute(node, path, field, op)
    if "type" in node:
        raise RuleError(path, "type", f"only attributes take a declared type; {field} is a {_field_type(field)}")
    return _validate_field(node, path, field, op)


def _field_type(field: str) -> str:
    spec = FIELDS.get(field)
    return spec.type if spec else "field"


def _validate_field(node: dict[str, Any], path: str, field: str, op: str) -> Leaf:
    spec = FIELDS.get(field)
    if spec is None:
        raise RuleError(
            path,
            "field",
            f"unknown field {_show(field)}; use one of {', '.join(FIELDS)} or attributes.{field}",
        )
    if op not in spec.ops:
        raise RuleError(path, "op", f"{op} is not valid for {field}; use one of {', '.join(spec.ops)}")
    value = _check_value(node.get("value"), spec.type, op, field, path)
    if spec.choices:
        _check_choices(value, spec.choices, field, path)
    if field == "phone" and op in ("eq", "neq", "in", "not_in"):
        value = _normalize_phones(value, path)
    if spec.type == TOPIC and value is not None:
        # Topic names are stored lower-case (audience.models.TOPIC_NAME_VALIDATOR).
        value = tuple(v.strip().lower() for v in value) if isinstance(value, tuple) else value.strip().lower()
    return Leaf(field, op, spec.type, value)


def _check_choices(value: Any, choices: tuple[str, ...], field: str, path: str) -> None:
    for i, item in enumerate(value if isinstance(value, tuple) else (value,)):
        if item not in choices:
            key = f"value[{i}]" if isinstance(value, tuple) else "value"
            raise RuleError(path, key, f"{field} is one of {', '.join(choices)}, got {_show(item)}")


def _normalize_phones(value: Any, path: str) -> Any:
    items = value if isinstance(value, tuple) else (value,)
    normalized = []
    for i, item in enumerate(items):
        try:
            normalized.append(normalize_phone(item))
        except InvalidPhone as exc:
            raise RuleError(path, f"value[{i}]" if isinstance(value, tuple) else "value", str(exc)) from None
    return tuple(normalized) if isinstance(value, tuple) else normalized[0]


def _validate_attribute(node: dict[str, Any], path: str, field: str, op: str) -> Leaf:
    key = field[len(ATTRIBUTES_PREFIX) :]
    if not key.strip() or len(key) > 200:
        raise RuleError(path, "field", f"expected an attribute name after 'attributes.', got {_show(field)}")
    declared = node.get("type")
    if declared is not None and declared not in ATTRIBUTE_TYPES:
        raise RuleError(path, "type", f"unknown type {_show(declared)}; use one of {', '.join(ATTRIBUTE_TYPES)}")
    value = node.get("value")
    kind = declared or _infer_type(value, op, field, path)
    if op not in OPS_BY_TYPE.get(kind, NO_VALUE_OPS):
        valid = ", ".join(OPS_BY_TYPE[kind])
        raise RuleError(path, "op", f"{op} is not valid for a {kind} ({field}); use one of {valid}")
    return Leaf(field, op, kind, _check_value(value, kind, op, field, path), declared=declared is not None)


def _infer_type(value: Any, op: str, field: str, path: str) -> str:
    if op in NO_VALUE_OPS:
        return ANY
    if (op in LIST_OPS or op == "between") and not (isinstance(value, list) and value):
        _check_list(value, ANY, op, field, path)  # raises: the list itself is wrong
    sample = value[0] if isinstance(value, list) and value else value
    if isinstance(sample, bool):
        return BOOLEAN
    if isinstance(sample, int | float):
        return NUMBER
    if isinstance(sample, str):
        if op in ("before", "after") or (op in OPS_BY_TYPE[DATE] and is_date_text(sample, relative=op in ORDERING_OPS)):
            return DATE
        if op in ORDERING_OPS:
            key = "value[0]" if isinstance(value, list) else "value"
            raise RuleError(path, key, f"expected a number or a date for {field}, got {_show(sample)}")
        return STRING
    key = "value[0]" if isinstance(value, list) and value else "value"
    raise RuleError(path, key, f"expected a number, string, boolean or date for {field}, got {_show(sample)}")


def _check_value(value: Any, kind: str, op: str, field: str, path: str) -> Any:
    if op in NO_VALUE_OPS:
        return None
    if op in LIST_OPS or op == "between":
        return _check_list(value, kind, op, field, path)
    return _check_scalar(value, kind, field, path, "value")


def _check_list(value: Any, kind: str, op: str, field: str, path: str) -> tuple[Any, ...]:
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise RuleError(path, "value", f"between needs a list of two values [low, high], got {_show(value)}")
    elif not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise RuleError(path, "value", f"{op} needs a list of 1 to {MAX_LIST} values, got {_show(value)}")
    items = tuple(_check_scalar(item, kind, field, path, f"value[{i}]") for i, item in enumerate(value))
    if op == "between" and kind == NUMBER and items[0] > items[1]:
        raise RuleError(path, "value", f"between needs the low value first, got {_show(value)}")
    return items


def _check_scalar(value: Any, kind: str, field: str, path: str, key: str) -> Any:
    ok = {
        NUMBER: isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        BOOLEAN: isinstance(value, bool),
        STRING: isinstance(value, str) and len(value) <= MAX_STRING,
        TOPIC: isinstance(value, str) and 0 < len(value) <= 64,
        DATE: isinstance(value, str) and is_date_text(value),
    }[kind]
    if not ok:
        article = "an" if kind[0] in "aeiou" else "a"
        hint = " (YYYY-MM-DD, an ISO datetime, today, yesterday, now or 'N days ago')" if kind == DATE else ""
        raise RuleError(path, key, f"expected {article} {kind}{hint} for {field}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
