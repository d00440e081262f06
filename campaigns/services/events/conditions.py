"""Property conditions of a triggered campaign: validated when saved, evaluated on each event."""

from __future__ import annotations

import logging
import re
from typing import Any

logger = logging.getLogger(__name__)


PROPERTY_RE = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")


MAX_CONDITIONS = 50


# true or false: a missing property fails eq/gt/in/contains/exists and passes neq/not_in/not_exists.

ORDERING_OPS = ("gt", "gte", "lt", "lte")
PROPERTY_OPS = ("eq", "neq", "in", "not_in", "contains", "icontains", *ORDERING_OPS, "exists", "not_exists")
_MISSING = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or _is_number(value)


def conditions_clean(conditions: Any) -> list[dict[str, Any]]:
    """Validate a property-condition list; ValueError names the item and key, e.g. "[1].op: ..."."""
    if conditions in (None, ""):
        return []
    if not isinstance(conditions, list):
        raise ValueError('a list of conditions such as [{"property": "total", "op": "gte", "value": 50}]')
    if len(conditions) > MAX_CONDITIONS:
        raise ValueError(f"at most {MAX_CONDITIONS} conditions")
    return [_condition_clean(item, f"[{index}]") for index, item in enumerate(conditions)]


def _condition_clean(item: Any, at: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"{at}: a condition is an object with property, op and value")
    unknown = set(item) - {"property", "op", "value"}
    if unknown:
        raise ValueError(f"{at}: unknown key {sorted(unknown)[0]!r}")
    prop, op = item.get("property"), item.get("op")
    if not isinstance(prop, str) or not PROPERTY_RE.match(prop):
        raise ValueError(f"{at}.property: a property name such as total or order.total")
    if op not in PROPERTY_OPS:
        raise ValueError(f"{at}.op: {op!r} is not one of {', '.join(PROPERTY_OPS)}")
    if op in ("exists", "not_exists"):
        if "value" in item:
            raise ValueError(f"{at}.value: {op} takes no value")
        return {"property": prop, "op": op}
    if "value" not in item:
        raise ValueError(f"{at}.value: {op} needs a value")
    value = item["value"]
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or not all(_is_scalar(v) for v in value):
            raise ValueError(f"{at}.value: {op} needs a non-empty list of strings, numbers or booleans")
    elif op in ORDERING_OPS and not _is_number(value):
        raise ValueError(f"{at}.value: {op} compares numbers; {value!r} is not a number")
    elif op in ("contains", "icontains") and not isinstance(value, str):
        raise ValueError(f"{at}.value: {op} needs a string")
    elif not _is_scalar(value):
        raise ValueError(f"{at}.value: a string, number, boolean or null")
    return {"property": prop, "op": op, "value": value}


def _property(properties: Any, path: str) -> Any:
    value = properties
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _equal(actual: Any, expected: Any) -> bool:
    if _is_number(expected):
        return _is_number(actual) and actual == expected
    return type(actual) is type(expected) and actual == expected  # "1" is not 1, True is not 1


def condition_holds(condition: dict[str, Any], properties: dict[str, Any]) -> bool:
    op, expected = condition["op"], condition.get("value")
    actual = _property(properties, condition["property"])
    if op in ("exists", "not_exists"):
        return (actual is not _MISSING and actual is not None) == (op == "exists")
    if op in ("neq", "not_in"):
        return not condition_holds({**condition, "op": op[1:] if op == "neq" else "in"}, properties)
    if actual is _MISSING:
        return False
    if op == "eq":
        return _equal(actual, expected)
    if op == "in":
        return any(_equal(actual, item) for item in expected)
    if op in ("contains", "icontains"):
        fold = str.casefold if op == "icontains" else str
        if isinstance(actual, list):
            return any(isinstance(item, str) and fold(expected) == fold(item) for item in actual)
        return isinstance(actual, str) and fold(expected) in fold(actual)
    if not _is_number(actual):
        return False
    return {"gt": actual > expected, "gte": actual >= expected, "lt": actual < expected, "lte": actual <= expected}[op]


def conditions_hold(conditions: list[dict[str, Any]], properties: dict[str, Any]) -> bool:
    return all(condition_holds(condition, properties) for condition in conditions or [])
