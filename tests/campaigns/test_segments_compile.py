"""Every operator on every type, compiled and evaluated by PostgreSQL against real rows."""

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from audience.models import Channel, ConsentStatus, Contact, ContactTopic
from campaigns import selectors
from campaigns.segments.query import parse
from tests.factories import ContactFactory, TopicFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)
EVERYONE = {"ann", "bob", "cat", "dan", "eve", "fay"}


@pytest.fixture
def people(db):
    """Six contacts; cat holds attributes of the wrong types, dan none at all."""
    vip, news = TopicFactory(name="vip"), TopicFactory(name="news")
    rows = {
        "ann": dict(
            attributes={"age": 17, "score": 4.5, "vip": True, "city": "Nairobi", "joined": "2026-03-10"},
            channel=Channel.WHATSAPP,
            email="ann@example.com",
            locale="sw",
            timezone="Africa/Nairobi",
            phone="+254700000001",
            last_inbound_at=NOW - dt.timedelta(hours=2),
        ),
        "bob": dict(
            attributes={"age": 30, "vip": False, "city": "Lagos", "joined": "2025-06-01T08:00:00+00:00"},
            phone="+254700000002",
            last_inbound_at=NOW - dt.timedelta(days=3),
        ),
        "cat": dict(
            attributes={"age": "old", "city": 5, "joined": "not a date", "vip": "yes", "score": [1]},
            consent_status=ConsentStatus.OPTED_OUT,
            phone="+254700000003",
        ),
        "dan": dict(attributes={}, phone="+254700000004"),
        "eve": dict(
            attributes={"age": 18.0, "city": "nairobi west", "joined": "2026-02-30", "score": None},
            email="eve@example.org",
            phone="+254700000005",
        ),
        "fay": dict(
            attributes={"age": 65, "city": "Lagos", "joined": "2024-02-29", "vip": True},
            channel=Channel.WHATSAPP,
            phone="+254700000006",
        ),
    }
    created = {name: ContactFactory(name=name, **fields) for name, fields in rows.items()}
    ages = {"ann": 1, "bob": 40, "cat": 400, "dan": 0, "eve": 31, "fay": 30}
    for name, days in ages.items():
        Contact.objects.filter(pk=created[name].pk).update(created_at=NOW - dt.timedelta(days=days, hours=1))
    ContactTopic.objects.create(contact=created["ann"], topic=vip)
    ContactTopic.objects.create(contact=created["ann"], topic=news)
    ContactTopic.objects.create(contact=created["bob"], topic=news)
    ContactTopic.objects.create(contact=created["fay"], topic=vip)
    return created


def matches(rule) -> set[str]:
    tree = parse(rule) if isinstance(rule, str) else rule
    found = set(selectors.segment_queryset(tree, now=NOW).values_list("name", flat=True))
    # NOT must be the exact complement: no contact may fall through as SQL NULL.
    negated = set(selectors.segment_queryset({"not": tree}, now=NOW).values_list("name", flat=True))
    assert found.isdisjoint(negated) and found | negated == EVERYONE, (found, negated)
    return found


NUMBER_CASES = [
    ("age = 18", {"eve"}),
    ("age != 18", EVERYONE - {"eve"}),
    ("age in (17, 65, 99)", {"ann", "fay"}),
    ("age not in (17, 65)", EVERYONE - {"ann", "fay"}),
    ("age > 18", {"bob", "fay"}),
    ("age >= 18", {"bob", "eve", "fay"}),
    ("age < 18", {"ann"}),
    ("age <= 18", {"ann", "eve"}),
    ("age between 18 and 30", {"bob", "eve"}),
    ("age exists", {"ann", "bob", "cat", "eve", "fay"}),
    ("age not exists", {"dan"}),
    ("age::number exists", {"ann", "bob", "eve", "fay"}),
    ("age::number not exists", {"cat", "dan"}),
    ("score > 4.4", {"ann"}),
    ("score exists", {"ann", "cat"}),
]

STRING_CASES = [
    ('city = "Lagos"', {"bob", "fay"}),
    ('city != "Lagos"', EVERYONE - {"bob", "fay"}),
    ('city in ("Nairobi", "Lagos")', {"ann", "bob", "fay"}),
    ('city not in ("Nairobi", "Lagos")', {"cat", "dan", "eve"}),
    ('city contains "airobi"', {"ann", "eve"}),
    ('city contains "Nai"', {"ann"}),
    ('city icontains "NAIROBI"', {"ann", "eve"}),
    ('city icontains "%"', set()),
    ("city::string exists", {"ann", "bob", "eve", "fay"}),
    ("city::string not exists", {"cat", "dan"}),
    ('age::string = "old"', {"cat"}),
]

BOOLEAN_CASES = [
    ("vip = true", {"ann", "fay"}),
    ("vip = false", {"bob"}),
    ("vip != true", EVERYONE - {"ann", "fay"}),
    ("vip::boolean exists", {"ann", "bob", "fay"}),
    ("vip::boolean not exists", {"cat", "dan", "eve"}),
]

DATE_CASES = [
    ('joined = "2026-03-10"', {"ann"}),
    ('joined != "2026-03-10"', EVERYONE - {"ann"}),
    ('joined > "2025-06-01"', {"ann"}),
    ('joined >= "2025-06-01"', {"ann", "bob"}),
    ('joined < "2025-06-01"', {"fay"}),
    ('joined <= "2025-06-01"', {"bob", "fay"}),
    ('joined between "2024-01-01" and "2025-12-31"', {"bob", "fay"}),
    ('joined before "2026-01-01"', {"bob", "fay"}),
    ('joined after "2025-06-01"', {"ann"}),
    ('joined after "30 days ago"', {"ann"}),
    ('joined before "2 weeks ago"', {"bob", "fay"}),
    ('joined after "1 year ago"', {"ann", "bob"}),
    ('joined after "2 years ago"', {"ann", "bob"}),
    ('joined after "3 years ago"', {"ann", "bob", "fay"}),
    ('joined < "today"', {"ann", "bob", "fay"}),
    ("joined::date exists", {"ann", "bob", "fay"}),
    ("joined::date not exists", {"cat", "dan", "eve"}),
    ('joined::string = "2026-02-30"', {"eve"}),
]

FIELD_CASES = [
    ('name = "ann"', {"ann"}),
    ('name != "ann"', EVERYONE - {"ann"}),
    ('name in ("ann", "bob")', {"ann", "bob"}),
    ('name not in ("ann", "bob")', EVERYONE - {"ann", "bob"}),
    ('name contains "a"', {"ann", "cat", "dan", "fay"}),
    ('name icontains "A"', {"ann", "cat", "dan", "fay"}),
    ("email exists", {"ann", "eve"}),
    ("email not exists", EVERYONE - {"ann", "eve"}),
    ('email icontains "EXAMPLE.ORG"', {"eve"}),
    ('phone = "+254 700 000 001"', {"ann"}),
    ('phone = "whatsapp:+254700000002"', {"bob"}),
    ('phone contains "0003"', {"cat"}),
    ('channel = "whatsapp"', {"ann", "fay"}),
    ('channel != "whatsapp"', EVERYONE - {"ann", "fay"}),
    ('channel in ("sms")', EVERYONE - {"ann", "fay"}),
    ('channel not in ("sms")', {"ann", "fay"}),
    ('consent_status = "opted_in"', EVERYONE - {"cat"}),
    ('consent_status != "opted_in"', {"cat"}),
    ('consent_status in ("opted_out")', {"cat"}),
    ('consent_status not in ("opted_out")', EVERYONE - {"cat"}),
    ('locale = "sw"', {"ann"}),
    ('timezone = "Africa/Nairobi"', {"ann"}),
    ("timezone not exists", EVERYONE - {"ann"}),
    ('created_at = "today"', {"dan"}),
    ('created_at = "yesterday"', {"ann"}),
    ('created_at != "today"', EVERYONE - {"dan"}),
    ('created_at after "30 days ago"', {"ann", "dan"}),
    ('created_at > "30 days ago"', {"ann", "dan"}),
    ('created_at >= "30 days ago"', {"ann", "dan", "fay"}),
    ('created_at before "30 days ago"', {"bob", "cat", "eve"}),
    ('created_at < "30 days ago"', {"bob", "cat", "eve"}),
    ('created_at <= "30 days ago"', {"bob", "cat", "eve", "fay"}),
    ('created_at between "31 days ago" and "30 days ago"', {"eve", "fay"}),
    ('created_at before "2 weeks ago"', {"bob", "cat", "eve", "fay"}),
    ('created_at after "2026-03-13"', {"ann", "dan"}),
    ('created_at before "2026-03-15T10:30:00+00:00"', EVERYONE - {"dan"}),
    ('created_at before "2026-03-15T11:30:00+00:00"', EVERYONE),
    ('created_at after "90 minutes ago"', {"dan"}),
    ("last_inbound_at exists", {"ann", "bob"}),
    ("last_inbound_at not exists", EVERYONE - {"ann", "bob"}),
    ('last_inbound_at after "24 hours ago"', {"ann"}),
    ('last_inbound_at before "24 hours ago"', {"bob"}),
    ('last_inbound_at = "today"', {"ann"}),
    ('last_inbound_at != "today"', EVERYONE - {"ann"}),
]

TOPIC_CASES = [
    ('topic = "vip"', {"ann", "fay"}),
    ('topic != "vip"', EVERYONE - {"ann", "fay"}),
    ('topic in ("vip", "news")', {"ann", "bob", "fay"}),
    ('topic not in ("vip", "news")', {"cat", "dan", "eve"}),
    ("topic exists", {"ann", "bob", "fay"}),
    ("topic not exists", {"cat", "dan", "eve"}),
    ('topic = "vip" AND topic = "news"', {"ann"}),
]

NESTED_CASES = [
    ('age >= 18 AND city = "Lagos" AND NOT topic = "vip"', {"bob"}),
    ('age < 18 OR city = "Lagos" AND vip = true', {"ann", "fay"}),
    ('(age < 18 OR city = "Lagos") AND vip = true', {"ann", "fay"}),
    ('(age < 18 OR city = "Lagos") AND NOT (vip = true)', {"bob"}),
    ("NOT (topic exists OR email exists)", {"cat", "dan"}),
    ("NOT NOT age > 18", {"bob", "fay"}),
    (
        {
            "any": [
                {"all": [{"field": "attributes.age", "op": "gte", "value": 18}]},
                {"not": {"field": "topic", "op": "exists"}},
            ]
        },
        {"bob", "cat", "dan", "eve", "fay"},
    ),
]


@pytest.mark.parametrize(("rule", "expected"), NUMBER_CASES)
def test_number_operators(people, rule, expected):
    assert matches(rule) == expected


@pytest.mark.parametrize(("rule", "expected"), STRING_CASES)
def test_string_operators(people, rule, expected):
    assert matches(rule) == expected


@pytest.mark.parametrize(("rule", "expected"), BOOLEAN_CASES)
def test_boolean_operators(people, rule, expected):
    assert matches(rule) == expected


@pytest.mark.parametrize(("rule", "expected"), DATE_CASES)
def test_date_attribute_operators(people, rule, expected):
    assert matches(rule) == expected


@pytest.mark.parametrize(("rule", "expected"), FIELD_CASES)
def test_contact_field_operators(people, rule, expected):
    assert matches(rule) == expected


@pytest.mark.parametrize(("rule", "expected"), TOPIC_CASES)
def test_topic_operators(people, rule, expected):
    assert matches(rule) == expected


@pytest.mark.parametrize(("rule", "expected"), NESTED_CASES)
def test_nested_all_any_not(people, rule, expected):
    assert matches(rule) == expected


def test_a_value_of_the_wrong_type_does_not_crash_a_numeric_or_date_comparison(people):
    with connection.cursor() as cursor:
        # Stored as-is by PostgreSQL: a number no float can hold, and an impossible date.
        cursor.execute(
            'UPDATE audience_contact SET attributes = \'{"age": 1e400, "joined": "2026-13-45"}\' WHERE name = \'dan\''
        )
    assert matches("age > 100") == {"dan"}
    assert matches('joined before "2030-01-01"') == {"ann", "bob", "fay"}
    assert matches("age::number > 1e300") == {"dan"}
    assert matches("age::number between 0 and 1e300") == {"ann", "bob", "eve", "fay"}


def test_a_rule_compiles_to_one_query(people, django_assert_num_queries):
    tree = parse('age >= 18 AND topic = "news" AND joined after "2 years ago" AND consent_status = "opted_in"')
    with django_assert_num_queries(1):
        assert selectors.segment_count(tree, now=NOW) == 1
    with django_assert_num_queries(1):
        assert selectors.segment_counts(tree, now=NOW) == {"count": 1, "opted_in": 1}
    with django_assert_num_queries(1):
        assert [c.name for c in selectors.segment_sample(tree, now=NOW)] == ["bob"]


def test_the_where_fragment_and_the_select_run_as_raw_sql(people):
    tree = parse('age >= 18 AND NOT topic = "vip" OR created_at after "30 days ago"')
    expected = selectors.segment_count(tree, now=NOW)
    assert expected == 4
    where, params = selectors.segment_where(tree, now=NOW)
    select, select_params = selectors.segment_sql(tree, now=NOW)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM audience_contact WHERE {where}", params)
        assert cursor.fetchone()[0] == expected
        cursor.execute(f"SELECT count(*) FROM ({select}) AS segment", select_params)
        assert cursor.fetchone()[0] == expected


def test_consent_and_topics_compile_to_sargable_sql(people):
    sql, _ = selectors.segment_sql(parse('consent_status = "opted_in" AND topic = "vip" AND city = "Lagos"'), now=NOW)
    assert '"audience_contact"."consent_status" = %s' in sql
    assert "EXISTS(SELECT" in sql and '"audience_contacttopic"' in sql
    assert '"audience_contact"."attributes" @> %s' in sql


def test_relative_dates_are_resolved_when_compiled(people):
    tree = parse('created_at after "2 days ago"')
    assert set(selectors.segment_queryset(tree, now=NOW).values_list("name", flat=True)) == {"ann", "dan"}
    later = NOW + dt.timedelta(days=5)
    assert set(selectors.segment_queryset(tree, now=later).values_list("name", flat=True)) == set()
    assert selectors.segment_count(tree) == 0  # the real now is months after NOW
    assert timezone.now() > later
