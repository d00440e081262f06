"""Segment writes through campaigns.services: both syntaxes, validated alike."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from campaigns import selectors, services
from campaigns.models import Segment
from campaigns.segments.rules import RuleError
from campaigns.services import SegmentError
from tests.factories import ContactFactory, TopicFactory

pytestmark = pytest.mark.django_db


def test_a_segment_from_a_query_keeps_the_query_and_the_canonical_tree(staff_user):
    TopicFactory(name="vip")
    segment = services.segment_create(name=" Adults ", query=' age >= 18 AND NOT topic = "vip" ', created_by=staff_user)
    segment.refresh_from_db()
    assert segment.name == "Adults"
    assert segment.query == 'age >= 18 AND NOT topic = "vip"'
    assert segment.definition == {
        "all": [
            {"field": "attributes.age", "op": "gte", "value": 18},
            {"not": {"field": "topic", "op": "eq", "value": "vip"}},
        ]
    }
    assert segment.created_by == staff_user


def test_a_segment_from_json_stores_no_query():
    segment = services.segment_create(name="one", definition={"any": [{"field": "email", "op": "exists"}]})
    segment.refresh_from_db()
    assert segment.query == ""
    assert segment.definition == {"any": [{"field": "email", "op": "exists"}]}


def test_phone_values_are_stored_in_e164():
    segment = services.segment_create(
        name="one", definition={"field": "phone", "op": "eq", "value": "+254 712 345 678"}
    )
    assert segment.definition == {"field": "phone", "op": "eq", "value": "+254712345678"}


def test_an_unknown_topic_is_refused_in_both_syntaxes():
    TopicFactory(name="vip")
    with pytest.raises(SegmentError) as caught:
        services.segment_create(name="x", query='age > 1 AND NOT topic in ("vip", "vpi")')
    assert caught.value.detail["message"] == "there is no topic named 'vpi' at column 34"
    assert caught.value.detail["column"] == 34
    assert caught.value.message_dict["query"] == [
        'there is no topic named \'vpi\' at column 34\nage > 1 AND NOT topic in ("vip", "vpi")\n' + " " * 33 + "^"
    ]
    with pytest.raises(SegmentError) as caught:
        services.segment_create(name="x", definition={"not": {"field": "topic", "op": "eq", "value": "vpi"}})
    assert caught.value.message_dict == {"definition": ["not.value: there is no topic named 'vpi'"]}
    assert caught.value.detail["path"] == "not.value"
    assert not Segment.objects.exists()


def test_exactly_one_syntax_must_be_given():
    with pytest.raises(SegmentError, match="give either a definition or a query, not both"):
        services.segment_create(name="x", query="age > 1", definition={"field": "email", "op": "exists"})
    with pytest.raises(SegmentError, match="give a definition"):
        services.segment_create(name="x")
    with pytest.raises(SegmentError, match="give a definition"):
        services.segment_definition_clean(query="  ", definition="")
    with pytest.raises(SegmentError, match="the rule is empty"):
        services.segment_definition_clean(definition={})


def test_names_are_unique():
    services.segment_create(name="adults", query="age >= 18")
    with pytest.raises(ValidationError) as caught:
        services.segment_create(name="adults", query="age >= 21")
    assert caught.value.message_dict == {"name": ["Segment with this Name already exists."]}
    assert Segment.objects.count() == 1


def test_the_database_refuses_an_empty_definition():
    with pytest.raises(IntegrityError):
        Segment.objects.create(name="everyone?", definition={})


def test_update_with_json_clears_the_stale_query_and_update_with_a_query_sets_both():
    segment = services.segment_create(name="s", query="age >= 18")
    services.segment_update(segment, data={"definition": {"field": "email", "op": "exists"}})
    segment.refresh_from_db()
    assert (segment.query, segment.definition) == ("", {"field": "email", "op": "exists"})
    services.segment_update(segment, data={"query": "age < 3", "description": "babies"})
    segment.refresh_from_db()
    assert segment.query == "age < 3"
    assert segment.definition == {"field": "attributes.age", "op": "lt", "value": 3}
    assert segment.description == "babies"


def test_an_invalid_update_changes_nothing():
    segment = services.segment_create(name="s", query="age >= 18")
    with pytest.raises(SegmentError):
        services.segment_update(segment, data={"query": "age >= "})
    segment.refresh_from_db()
    assert segment.query == "age >= 18"


def test_a_stored_definition_that_no_longer_validates_raises_instead_of_matching_everyone():
    ContactFactory()
    segment = services.segment_create(name="s", query="age >= 18")
    Segment.objects.filter(pk=segment.pk).update(definition={"field": "attributes.age", "op": "greater", "value": 1})
    segment.refresh_from_db()
    with pytest.raises(RuleError):
        selectors.segment_count(segment)
    with pytest.raises(RuleError):
        selectors.segment_where(segment)


def test_a_saved_segment_counts_in_one_query(django_assert_num_queries):
    ContactFactory(attributes={"age": 20})
    ContactFactory(attributes={"age": 10})
    segment = services.segment_create(name="s", query="age >= 18")
    with django_assert_num_queries(1):
        assert selectors.segment_count(segment) == 1
