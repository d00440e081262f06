"""The query-string language: what it compiles to, and errors that point at a position."""

import pytest

from campaigns.segments.query import QueryError, parse, to_query, tokenize
from campaigns.segments.rules import to_json, validate

AGE_18 = {"field": "attributes.age", "op": "gte", "value": 18}


@pytest.mark.parametrize(
    ("query", "tree"),
    [
        (
            'age >= 18 AND city = "Nairobi" AND NOT topic = "vip"',
            {
                "all": [
                    AGE_18,
                    {"field": "attributes.city", "op": "eq", "value": "Nairobi"},
                    {"not": {"field": "topic", "op": "eq", "value": "vip"}},
                ]
            },
        ),
        ('signup_date after "30 days ago"', {"field": "attributes.signup_date", "op": "after", "value": "30 days ago"}),
        ('city in ("Nairobi", "Lagos")', {"field": "attributes.city", "op": "in", "value": ["Nairobi", "Lagos"]}),
        ("city not in ('Nairobi')", {"field": "attributes.city", "op": "not_in", "value": ["Nairobi"]}),
        ("email exists", {"field": "email", "op": "exists"}),
        ("email not exists", {"field": "email", "op": "not_exists"}),
        ("attributes.email exists", {"field": "attributes.email", "op": "exists"}),
        ("age between 18 and 30", {"field": "attributes.age", "op": "between", "value": [18, 30]}),
        ("score > -1.5e2", {"field": "attributes.score", "op": "gt", "value": -150.0}),
        ("vip = TRUE", {"field": "attributes.vip", "op": "eq", "value": True}),
        ("vip != false", {"field": "attributes.vip", "op": "neq", "value": False}),
        ("age <> 3", {"field": "attributes.age", "op": "neq", "value": 3}),
        ("age == 3", {"field": "attributes.age", "op": "eq", "value": 3}),
        ("age lte 3", {"field": "attributes.age", "op": "lte", "value": 3}),
        ('name icontains "ann"', {"field": "name", "op": "icontains", "value": "ann"}),
        ('name contains "say \\"hi\\""', {"field": "name", "op": "contains", "value": 'say "hi"'}),
        ('code::string = "18"', {"field": "attributes.code", "op": "eq", "value": "18", "type": "string"}),
        ("`first name` exists", {"field": "attributes.first name", "op": "exists"}),
        ("`attributes.a b` = 1", {"field": "attributes.a b", "op": "eq", "value": 1}),
        ("created_at before 'today'", {"field": "created_at", "op": "before", "value": "today"}),
    ],
)
def test_queries_compile_to_the_rule_tree(query, tree):
    assert parse(query) == tree


def test_and_binds_tighter_than_or_and_not_tighter_than_both():
    assert parse("a = 1 OR b = 2 AND c = 3") == {
        "any": [
            {"field": "attributes.a", "op": "eq", "value": 1},
            {
                "all": [
                    {"field": "attributes.b", "op": "eq", "value": 2},
                    {"field": "attributes.c", "op": "eq", "value": 3},
                ]
            },
        ]
    }
    assert parse("not a = 1 and b = 2") == {
        "all": [
            {"not": {"field": "attributes.a", "op": "eq", "value": 1}},
            {"field": "attributes.b", "op": "eq", "value": 2},
        ]
    }


def test_parentheses_group_and_same_operators_flatten():
    assert parse("(a = 1 OR b = 2) AND c = 3 AND (d = 4 AND e = 5)") == {
        "all": [
            {
                "any": [
                    {"field": "attributes.a", "op": "eq", "value": 1},
                    {"field": "attributes.b", "op": "eq", "value": 2},
                ]
            },
            {"field": "attributes.c", "op": "eq", "value": 3},
            {"field": "attributes.d", "op": "eq", "value": 4},
            {"field": "attributes.e", "op": "eq", "value": 5},
        ]
    }
    assert parse("NOT (a = 1 OR b = 2)") == {
        "not": {
            "any": [
                {"field": "attributes.a", "op": "eq", "value": 1},
                {"field": "attributes.b", "op": "eq", "value": 2},
            ]
        }
    }


def error_of(query: str) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse(query)
    return caught.value


@pytest.mark.parametrize(
    ("query", "message", "column"),
    [
        ("age >= ", "expected a value after '>=' at column 8", 8),
        ("age >=", "expected a value after '>=' at column 7", 7),
        ("age >= 18 AND", "expected a field name, got the end at column 14", 14),
        ("age >= 18 AND OR b = 1", "expected a field name, got 'OR' at column 15", 15),
        ("age > abc", """expected a value after '>', got 'abc' (quote text: "abc") at column 7""", 7),
        ('city = "Nairobi', "unterminated string starting at column 8", 8),
        ("(age > 1", "expected ')' to close the '(' at column 1, got the end at column 9", 9),
        ("age > 1)", "expected AND, OR or the end, got ')' at column 8", 8),
        ("age = 1 city = 2", "expected AND, OR or the end, got 'city' at column 9", 9),
        ("age ~ 3", "unexpected character '~' at column 5", 5),
        (
            "age 3",
            "expected an operator (=, !=, >, >=, <, <=, in, between, contains, exists...) after 'age', "
            "got '3' at column 5",
            5,
        ),
        ("age between 1 30", "expected AND between the two values of BETWEEN, got '30' at column 15", 15),
        ('city in "Nairobi"', "expected '(' to start the list of values, got '\"Nairobi\"' at column 9", 9),
        ('city in ("a" "b")', "expected ',' or ')' in the list of values, got '\"b\"' at column 14", 14),
        ("city not = 1", "expected IN or EXISTS after NOT, got '=' at column 10", 10),
        ("= 3", "expected a field name, got '=' at column 1", 1),
        ("   ", 'the query is empty; write consent_status = "opted_in" for every opted-in contact at column 4', 4),
        ("favourite-colour = 1", "unexpected character '-' at column 10", 10),
        # Parsed, then refused by validation at the position of the part it names.
        ('age > "abc"', 'expected a number or a date for attributes.age, got "abc" at column 7', 7),
        (
            'age >= 18 AND topic > "vip"',
            "gt is not valid for topic; use one of eq, neq, in, not_in, exists, not_exists at column 21",
            21,
        ),
        ('city in ("a", 3)', "expected a string for attributes.city, got 3 at column 15", 15),
        ("age between 30 and 18", "between needs the low value first, got [30, 18] at column 13", 13),
        ('channel = "fax"', 'channel is one of whatsapp, sms, got "fax" at column 11', 11),
        ("age::int > 3", 'unknown type "int"; use one of number, string, boolean, date at column 6', 6),
        (
            'joined before "next week"',
            "expected a date (YYYY-MM-DD, an ISO datetime, today, yesterday, now or 'N days ago') "
            'for attributes.joined, got "next week" at column 15',
            15,
        ),
    ],
)
def test_errors_point_at_the_column(query, message, column):
    error = error_of(query)
    assert error.message == message
    assert error.column == column


def test_the_error_shows_a_caret_under_the_culprit():
    error = error_of("age >= 18 AND city = ")
    assert str(error) == "expected a value after '=' at column 22\nage >= 18 AND city = \n                     ^"


def test_errors_in_a_multi_line_query_name_the_line():
    error = error_of('age >= 18\nAND city = "Nairobi"\nAND topic > 3')
    assert error.message.endswith("at line 3, column 11")
    assert (error.line, error.column) == (3, 11)
    assert error.excerpt == "AND topic > 3\n          ^"


def test_keywords_and_numbers_tokenize_without_eval():
    kinds = [(t.kind, t.text) for t in tokenize("__import__('os') >= 1")]
    assert kinds == [
        ("word", "__import__"),
        ("punct", "("),
        ("string", "'os'"),
        ("punct", ")"),
        ("op", ">="),
        ("number", "1"),
        ("end", ""),
    ]
    assert (
        error_of("__import__('os') >= 1").message
        == "expected an operator (=, !=, >, >=, <, <=, in, between, contains, exists...) after '__import__', "
        "got '(' at column 11"
    )


@pytest.mark.parametrize(
    "tree",
    [
        {
            "all": [
                AGE_18,
                {"any": [{"field": "topic", "op": "in", "value": ["vip", "news"]}, {"field": "email", "op": "exists"}]},
            ]
        },
        {
            "not": {
                "all": [
                    {"field": "attributes.city", "op": "not_in", "value": ["Lagos"]},
                    {"field": "attributes.vip", "op": "eq", "value": False},
                ]
            }
        },
        {"field": "attributes.code", "op": "eq", "value": "18", "type": "string"},
        {"field": "attributes.first name", "op": "icontains", "value": 'a "quoted" name'},
        {"field": "attributes.email", "op": "not_exists"},
        {"field": "attributes.in", "op": "eq", "value": 1},
        {"field": "created_at", "op": "between", "value": ["30 days ago", "today"]},
        {
            "any": [
                {"all": [AGE_18, {"not": {"field": "attributes.x", "op": "lt", "value": 2.5}}]},
                {"field": "locale", "op": "eq", "value": "sw"},
            ]
        },
    ],
)
def test_to_query_round_trips(tree):
    text = to_query(tree)
    assert parse(text) == to_json(validate(tree)), text
