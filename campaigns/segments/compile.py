"""Compile a validated rule tree into one Django Q that PostgreSQL evaluates.

Every leaf compiles to an expression that is true or false, never NULL, so NOT is an exact
complement. Plain columns use ordinary lookups (consent_status = 'opted_in' is a plain indexed
filter); topic membership is EXISTS on audience_contacttopic; attribute equality is JSONB
containment (attributes @> '{"city": "Nairobi"}'), which the GIN index on attributes serves.
Ordered attribute comparisons read the value only behind a CASE WHEN guard on jsonb_typeof (and a
strict date pattern for dates): CASE is the one SQL form whose evaluation order PostgreSQL
guarantees, so a contact whose "age" is "old" does not match instead of failing the query.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    CharField,
    DateField,
    DecimalField,
    Exists,
    Func,
    OuterRef,
    Q,
    Value,
    When,
    lookups,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Substr
from django.utils import timezone

from audience.models import ContactTopic
from campaigns.segments import rules
from campaigns.segments.rules import BOOLEAN, DATE, NUMBER, STRING, TOPIC, Group, Leaf, Node, Not

# A real calendar date (leap years included) at the start of the string, optionally followed by a
# time: exactly the strings PostgreSQL's ::date cast accepts from their first ten characters.
_DAY = r"(0[1-9]|1[0-9]|2[0-8])"
_LEAP = r"(\d\d(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)"
DATE_PATTERN = (
    rf"^(([1-9]\d{{3}}-(0[1-9]|1[0-2])-{_DAY})"
    r"|([1-9]\d{3}-(0[13-9]|1[0-2])-(29|30))"
    r"|([1-9]\d{3}-(0[13578]|1[02])-31)"
    rf"|({_LEAP}-02-29))([T ]|$)"
)

_RANGE_LOOKUPS = {
    "gt": lookups.GreaterThan,
    "gte": lookups.GreaterThanOrEqual,
    "lt": lookups.LessThan,
    "lte": lookups.LessThanOrEqual,
}


def compile_rule(node: Node, *, now: dt.datetime | None = None) -> Q:
    """One Q over audience.Contact for a tree returned by rules.validate."""
    now = now or timezone.now()
    if isinstance(node, Group):
        combined = Q()
        for child in node.children:
            compiled = compile_rule(child, now=now)
            combined = (combined & compiled) if node.kind == "all" else (combined | compiled)
        return combined
    if isinstance(node, Not):
        return ~compile_rule(node.child, now=now)
    return _compile_leaf(node, now)


def _compile_leaf(leaf: Leaf, now: dt.datetime) -> Q:
    negated = leaf.op in ("neq", "not_in", "not_exists")
    positive = {"neq": "eq", "not_in": "in", "not_exists": "exists"}.get(leaf.op, leaf.op)
    if leaf.type == TOPIC:
        q = _topic(positive, leaf.value)
    elif leaf.attribute is not None:
        q = _attribute(leaf.attribute, leaf.type, positive, leaf.value, now)
    elif leaf.type == DATE:
        q = _datetime_column(leaf.field, positive, leaf.value, now)
    else:
        q = _column(leaf.field, positive, leaf.value)
    return ~q if negated else q


# --- Columns and topics --------------------------------------------------------------------


def _column(field: str, op: str, value: Any) -> Q:
    if op == "exists":
        return ~Q(**{field: ""})
    lookup = {"eq": "exact", "in": "in", "contains": "contains", "icontains": "icontains"}[op]
    return Q(**{f"{field}__{lookup}": list(value) if op == "in" else value})


def _topic(op: str, value: Any) -> Q:
    memberships = ContactTopic.objects.filter(contact_id=OuterRef("pk"))
    if op == "eq":
        memberships = memberships.filter(topic__name=value)
    elif op == "in":
        memberships = memberships.filter(topic__name__in=list(value))
    return Q(Exists(memberships))


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _bounds(value: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime | None]:
    """The first instant of a date value and the first instant after it (None for an instant)."""
    resolved = rules.resolve_date(value, now)
    if isinstance(resolved, dt.datetime):
        return resolved, None
    return _day_start(resolved), _day_start(resolved + dt.timedelta(days=1))


def _datetime_column(field: str, op: str, value: Any, now: dt.datetime) -> Q:
    if op == "exists":
        return Q(**{f"{field}__isnull": False})
    if op == "between":
        low, _ = _bounds(value[0], now)
        high, high_end = _bounds(value[1], now)
        upper = Q(**{f"{field}__lt": high_end}) if high_end else Q(**{f"{field}__lte": high})
        return Q(**{f"{field}__gte": low}) & upper
    start, end = _bounds(value, now)
    if end is None:
        lookup = {"eq": "exact", "before": "lt", "after": "gt"}.get(op, op)
        return Q(**{f"{field}__{lookup}": start})
    if op == "eq":
        return Q(**{f"{field}__gte": start, f"{field}__lt": end})
    # A day D: before/lt D ends at D's first moment; after/gt D starts the day after; lte D
    # includes the whole of D.
    lookup, bound = {
        "lt": ("lt", start),
        "before": ("lt", start),
        "gte": ("gte", start),
        "gt": ("gte", end),
        "after": ("gte", end),
        "lte": ("lt", end),
    }[op]
    return Q(**{f"{field}__{lookup}": bound})


# --- Attributes ----------------------------------------------------------------------------


def _attribute(key: str, kind: str, op: str, value: Any, now: dt.datetime) -> Q:
    if kind in (STRING, NUMBER, BOOLEAN) and op in ("eq", "in"):
        values = value if op == "in" else (value,)
        combined = Q()
        for item in values:
            combined |= Q(attributes__contains={key: item})
        return combined
    if op == "exists":
        return _exists(key, kind)
    if kind == STRING:
        lookup = lookups.Contains if op == "contains" else lookups.IContains
        return _guarded(_is_type(key, STRING), lookup(KeyTextTransform(key, "attributes"), value))
    if kind == NUMBER:
        return _guarded(_is_type(key, NUMBER), _compare(_as_number(key), op, value, _decimal))
    return _guarded(_is_date(key), _compare(_as_date(key), op, value, lambda text: _as_day(text, now)))


def _exists(key: str, kind: str) -> Q:
    if kind == rules.ANY:
        return Q(attributes__has_key=key) & ~Q(attributes__contains={key: None})
    return _guarded(_is_date(key) if kind == DATE else _is_type(key, kind), Value(True))


def _guarded(guard: Q, predicate: Any) -> Q:
    return Q(Case(When(guard, then=predicate), default=Value(False), output_field=BooleanField()))


def _typeof(key: str) -> Func:
    return Func(KeyTransform(key, "attributes"), function="jsonb_typeof", output_field=CharField())


def _is_type(key: str, kind: str) -> Q:
    return Q(lookups.Exact(_typeof(key), Value(kind)))


def _is_date(key: str) -> Q:
    return _is_type(key, STRING) & Q(lookups.Regex(KeyTextTransform(key, "attributes"), Value(DATE_PATTERN)))


def _as_number(key: str) -> Func:
    # numeric, not float: any JSON number fits numeric, while 1e400 would overflow a float.
    return Func(KeyTransform(key, "attributes"), template="(%(expressions)s)::numeric", output_field=DecimalField())


def _as_date(key: str) -> Cast:
    return Cast(Substr(KeyTextTransform(key, "attributes"), 1, 10), DateField())


def _decimal(value: int | float) -> Decimal:
    return Decimal(str(value))


def _as_day(text: str, now: dt.datetime) -> dt.date:
    resolved = rules.resolve_date(text, now)
    return timezone.localdate(resolved) if isinstance(resolved, dt.datetime) else resolved


def _compare(lhs: Any, op: str, value: Any, convert) -> Any:
    if op == "between":
        return lookups.Range(lhs, (convert(value[0]), convert(value[1])))
    if op == "eq":
        return lookups.Exact(lhs, convert(value))
    lookup = _RANGE_LOOKUPS[{"before": "lt", "after": "gt"}.get(op, op)]
    return lookup(lhs, convert(value))
