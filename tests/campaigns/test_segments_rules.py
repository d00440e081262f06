"""Validation of JSON rule trees: what is refused, with the message and the path that name it."""

import datetime as dt

import pytest
from django.utils import timezone

from campaigns.segments import rules
from campaigns.segments.rules import RuleError, resolve_date, to_json, validate

AGE_GT_1 = {"field": "attributes.age", "op": "gt", "value": 1}


def error_of(tree) -> str:
    with pytest.raises(RuleError) as caught:
        validate(tree)
    return str(caught.value)


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {"all": [AGE_GT_1, {"field": "attributes.age", "op": "gt", "value": "abc", "type": "number"}]},
            'all[1].value: expected a number for attributes.age, got "abc"',
        ),
        (
            {"all": [AGE_GT_1, {"field": "attributes.age", "op": "gt", "value": "abc"}]},
            'all[1].value: expected a number or a date for attributes.age, got "abc"',
        ),
        (
            {"any": [AGE_GT_1, {"not": {"field": "agee", "op": "eq", "value": 3}}]},
            'any[1].not.field: unknown field "agee"; use one of name, email, phone, locale, timezone, channel, '
            "consent_status, created_at, last_inbound_at, topic or attributes.agee",
        ),
        (
            {"field": "attributes.age", "op": "greater", "value": 3},
            'op: unknown operator "greater"; use one of eq, neq, in, not_in, contains, icontains, gt, gte, lt, lte, '
            "between, before, after, exists, not_exists",
        ),
        (
            {"field": "topic", "op": "gt", "value": "vip"},
            "op: gt is not valid for topic; use one of eq, neq, in, not_in, exists, not_exists",
        ),
        (
            {"field": "attributes.vip", "op": "contains", "value": True},
            "op: contains is not valid for a boolean (attributes.vip); use one of eq, neq, exists, not_exists",
        ),
        (
            {"field": "attributes.city", "op": "gt", "value": "Nairobi", "type": "string"},
            "op: gt is not valid for a string (attributes.city); use one of eq, neq, in, not_in, contains, icontains, "
            "exists, not_exists",
        ),
        (
            {"field": "name", "op": "eq", "value": 3},
            "value: expected a string for name, got 3",
        ),
        (
            {"field": "created_at", "op": "before", "value": "next tuesday"},
            "value: expected a date (YYYY-MM-DD, an ISO datetime, today, yesterday, now or 'N days ago') for "
            'created_at, got "next tuesday"',
        ),
        (
            {"field": "created_at", "op": "exists"},
            "op: exists is not valid for created_at; use one of eq, neq, gt, gte, lt, lte, between, before, after",
        ),
        (
            {"field": "channel", "op": "in", "value": ["sms", "telegram"]},
            'value[1]: channel is one of whatsapp, sms, got "telegram"',
        ),
        (
            {"field": "consent_status", "op": "eq", "value": "yes"},
            'value: consent_status is one of opted_in, opted_out, got "yes"',
        ),
        (
            {"field": "phone", "op": "eq", "value": "12"},
            "value: '12' has no country code; write it as +<country code><number>, or choose a default country",
        ),
        ({"field": "attributes.age", "op": "exists", "value": 3}, "value: exists takes no value, got 3"),
        ({"field": "attributes.age", "op": "eq"}, "value: eq needs a value"),
        (
            {"field": "attributes.age", "op": "eq", "vale": 3},
            "vale: unknown key; a rule has all, any, not, or field, op, value and type",
        ),
        ({"field": "attributes.age", "op": "in", "value": []}, "value: in needs a list of 1 to 1000 values, got []"),
        (
            {"field": "attributes.age", "op": "in", "value": [1, "2"]},
            'value[1]: expected a number for attributes.age, got "2"',
        ),
        (
            {"field": "attributes.age", "op": "between", "value": [1]},
            "value: between needs a list of two values [low, high], got [1]",
        ),
        (
            {"field": "attributes.age", "op": "between", "value": [30, 18]},
            "value: between needs the low value first, got [30, 18]",
        ),
        ({"field": "attributes.age", "op": "eq", "value": None}, "value: eq needs a value"),
        (
            {"field": "attributes.age", "op": "eq", "value": {"a": 1}},
            'value: expected a number, string, boolean or date for attributes.age, got {"a": 1}',
        ),
        (
            {"field": "attributes.", "op": "exists"},
            "field: expected an attribute name after 'attributes.', got \"attributes.\"",
        ),
        (
            {"field": "attributes.age", "op": "eq", "value": 3, "type": "integer"},
            'type: unknown type "integer"; use one of number, string, boolean, date',
        ),
        (
            {"field": "name", "op": "eq", "value": "x", "type": "string"},
            "type: only attributes take a declared type; name is a string",
        ),
        ({"all": []}, "all: expected a non-empty list of rules, got []"),
        ({"any": [AGE_GT_1, {"all": []}]}, "any[1].all: expected a non-empty list of rules, got []"),
        ({"all": [AGE_GT_1], "any": [AGE_GT_1]}, "rule: a group has exactly one key (all), got all, any"),
        ({"all": [AGE_GT_1, "age > 1"]}, 'all[1]: expected an object (all, any, not or a field rule), got "age > 1"'),
        ({"not": None}, "not: expected an object (all, any, not or a field rule), got null"),
    ],
)
def test_invalid_rules_are_refused_with_a_message_naming_the_culprit(tree, message):
    assert error_of(tree) == message


@pytest.mark.parametrize("empty", [None, {}, []])
def test_an_empty_rule_is_an_error_not_everyone(empty):
    assert "the rule is empty" in error_of(empty)


def test_the_documented_way_to_mean_every_opted_in_contact_validates():
    assert to_json(validate(rules.ALL_OPTED_IN)) == {"field": "consent_status", "op": "eq", "value": "opted_in"}


def test_a_too_deep_tree_is_refused():
    tree = AGE_GT_1
    for _ in range(rules.MAX_DEPTH + 1):
        tree = {"not": tree}
    assert "nested deeper than" in error_of(tree)


@pytest.mark.parametrize(
    ("leaf", "kind"),
    [
        ({"op": "eq", "value": 3}, "number"),
        ({"op": "eq", "value": 2.5}, "number"),
        ({"op": "eq", "value": True}, "boolean"),
        ({"op": "eq", "value": "Nairobi"}, "string"),
        ({"op": "eq", "value": "2026-01-01"}, "date"),
        ({"op": "eq", "value": "30 days ago"}, "string"),
        ({"op": "gte", "value": "30 days ago"}, "date"),
        ({"op": "after", "value": "today"}, "date"),
        ({"op": "in", "value": ["a", "b"]}, "string"),
        ({"op": "in", "value": ["2026-01-01"]}, "string"),
        ({"op": "contains", "value": "2026-01-01"}, "string"),
        ({"op": "between", "value": ["2026-01-01", "today"]}, "date"),
        ({"op": "exists"}, "any"),
        ({"op": "eq", "value": "18", "type": "string"}, "string"),
        ({"op": "exists", "type": "date"}, "date"),
    ],
)
def test_the_attribute_type_is_declared_or_inferred_from_the_value(leaf, kind):
    assert validate({"field": "attributes.x", **leaf}).type == kind


def test_topic_names_are_matched_lower_case():
    assert validate({"field": "topic", "op": "in", "value": [" VIP", "News"]}).value == ("vip", "news")


def test_phones_in_rules_are_normalised_to_e164():
    leaf = validate({"field": "phone", "op": "in", "value": ["whatsapp:+254 712 345 678", "00254712345679"]})
    assert leaf.value == ("+254712345678", "+254712345679")


def test_to_json_keeps_declared_types_and_drops_values_of_exists():
    tree = {
        "all": [
            {"field": "attributes.code", "op": "eq", "value": "18", "type": "string"},
            {"field": "email", "op": "exists", "value": None},
        ]
    }
    assert to_json(validate(tree)) == {
        "all": [
            {"field": "attributes.code", "op": "eq", "value": "18", "type": "string"},
            {"field": "email", "op": "exists"},
        ]
    }


NOON = dt.datetime(2026, 5, 31, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("today", dt.date(2026, 5, 31)),
        ("Yesterday", dt.date(2026, 5, 30)),
        ("30 days ago", dt.date(2026, 5, 1)),
        ("1 day ago", dt.date(2026, 5, 30)),
        ("2 weeks ago", dt.date(2026, 5, 17)),
        ("3 months ago", dt.date(2026, 2, 28)),
        ("1 year ago", dt.date(2025, 5, 31)),
        ("24 hours ago", NOON - dt.timedelta(hours=24)),
        ("90 minutes ago", NOON - dt.timedelta(minutes=90)),
        ("now", NOON),
        ("2026-01-02", dt.date(2026, 1, 2)),
        ("2026-01-02T03:04:05+03:00", dt.datetime(2026, 1, 2, 0, 4, 5, tzinfo=dt.UTC)),
    ],
)
def test_date_values_resolve_against_now(text, expected):
    assert resolve_date(text, NOON) == expected


def test_a_naive_datetime_value_is_read_in_the_project_time_zone():
    assert resolve_date("2026-01-02T03:04:05", NOON) == timezone.make_aware(dt.datetime(2026, 1, 2, 3, 4, 5))


def test_a_year_ago_from_a_leap_day_is_the_last_of_february():
    assert resolve_date("1 year ago", dt.datetime(2028, 2, 29, 12, tzinfo=dt.UTC)) == dt.date(2027, 2, 28)
