"""The segments API: roles, CRUD in both syntaxes, and the live preview."""

import re

import pytest
from django.test import Client

from audience.models import ConsentStatus
from campaigns import services
from campaigns.models import Segment
from tests.factories import ContactFactory, TopicFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_anonymous_requests_get_401(anon_api):
    segment = services.segment_create(name="s", query="age > 1")
    assert anon_api.get("/api/v1/segments/").status_code == 401
    assert anon_api.get(f"/api/v1/segments/{segment.pk}").status_code == 401
    assert anon_api.post("/api/v1/segments/", {"name": "x", "query": "age > 1"}, format="json").status_code == 401
    assert anon_api.post("/api/v1/segments/preview", {"query": "age > 1"}, format="json").status_code == 401


def test_a_user_without_a_role_cannot_preview():
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(UserFactory(username="nobody"))
    assert client.post("/api/v1/segments/preview", {"query": "age > 1"}, format="json").status_code == 403


def test_analysts_read_and_preview_but_cannot_write(analyst_api):
    segment = services.segment_create(name="s", query="age > 1")
    assert analyst_api.get("/api/v1/segments/").status_code == 200
    assert analyst_api.get(f"/api/v1/segments/{segment.pk}/").status_code == 200
    assert analyst_api.get(f"/api/v1/segments/{segment.pk}/preview").status_code == 200
    assert analyst_api.post("/api/v1/segments/preview", {"query": "age > 1"}, format="json").status_code == 200
    assert analyst_api.post("/api/v1/segments/", {"name": "x", "query": "age > 1"}, format="json").status_code == 403
    assert analyst_api.patch(f"/api/v1/segments/{segment.pk}/", {"name": "y"}, format="json").status_code == 403
    assert analyst_api.delete(f"/api/v1/segments/{segment.pk}/").status_code == 403
    assert Segment.objects.get().name == "s"


def test_preview_counts_and_samples_a_query(staff_api):
    for age in range(12):
        ContactFactory(attributes={"age": 20 + age})
    ContactFactory(attributes={"age": 99}, consent_status=ConsentStatus.OPTED_OUT)
    ContactFactory(attributes={"age": "old"})
    response = staff_api.post("/api/v1/segments/preview", {"query": "age >= 21"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["count"], body["opted_in"]) == (12, 11)
    assert len(body["sample"]) == 10
    assert all(contact["attributes"]["age"] >= 21 for contact in body["sample"])
    assert body["definition"] == {"field": "attributes.age", "op": "gte", "value": 21}


def test_preview_takes_a_json_definition_with_or_without_the_slash(staff_api):
    ContactFactory(email="a@example.com")
    ContactFactory()
    for url in ("/api/v1/segments/preview", "/api/v1/segments/preview/"):
        response = staff_api.post(url, {"definition": {"field": "email", "op": "exists"}}, format="json")
        assert response.status_code == 200
        assert response.json()["count"] == 1


def test_preview_errors_give_the_position_in_the_query(staff_api):
    response = staff_api.post("/api/v1/segments/preview", {"query": "age >= "}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["query"] == ["expected a value after '>=' at column 8\nage >= \n       ^"]
    assert body["error"] == {
        "field": "query",
        "message": "expected a value after '>=' at column 8",
        "line": 1,
        "column": 8,
        "position": 7,
        "excerpt": "age >= \n       ^",
    }


def test_preview_errors_give_the_path_in_the_definition(staff_api):
    definition = {
        "all": [
            {"field": "email", "op": "exists"},
            {"field": "attributes.age", "op": "gt", "value": "abc", "type": "number"},
        ]
    }
    response = staff_api.post("/api/v1/segments/preview", {"definition": definition}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "field": "definition",
        "message": 'all[1].value: expected a number for attributes.age, got "abc"',
        "path": "all[1].value",
    }


def test_an_empty_preview_is_refused_not_everyone(staff_api):
    ContactFactory()
    for body in ({}, {"query": ""}, {"definition": {}}, {"definition": {"all": []}}):
        response = staff_api.post("/api/v1/segments/preview", body, format="json")
        assert response.status_code == 400, body
        assert "count" not in response.json()


def test_crud_with_a_query(staff_api, staff_user):
    TopicFactory(name="vip")
    response = staff_api.post(
        "/api/v1/segments/",
        {"name": "Adults", "description": "18+", "query": 'age >= 18 AND NOT topic = "vip"'},
        format="json",
    )
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["created_by"] == "staff"
    assert created["definition"]["all"][1] == {"not": {"field": "topic", "op": "eq", "value": "vip"}}
    url = f"/api/v1/segments/{created['id']}"
    assert staff_api.get(url).json()["query"] == 'age >= 18 AND NOT topic = "vip"'
    assert [s["name"] for s in staff_api.get("/api/v1/segments/").json()["results"]] == ["Adults"]

    response = staff_api.patch(url, {"definition": {"field": "email", "op": "exists"}}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["query"], response.json()["definition"]) == ("", {"field": "email", "op": "exists"})

    response = staff_api.patch(url, {"query": "age >"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["column"] == 6
    assert Segment.objects.get().definition == {"field": "email", "op": "exists"}

    assert staff_api.delete(url).status_code == 204
    assert not Segment.objects.exists()


def test_create_with_a_definition_and_errors(staff_api):
    definition = {
        "any": [{"field": "channel", "op": "eq", "value": "whatsapp"}, {"field": "locale", "op": "eq", "value": "sw"}]
    }
    response = staff_api.post("/api/v1/segments/", {"name": "a", "definition": definition}, format="json")
    assert response.status_code == 201
    assert response.json()["query"] == ""
    duplicate = staff_api.post("/api/v1/segments/", {"name": "a", "definition": definition}, format="json")
    assert duplicate.status_code == 400
    assert "name" in duplicate.json()
    both = staff_api.post(
        "/api/v1/segments/", {"name": "b", "definition": definition, "query": "age > 1"}, format="json"
    )
    assert both.status_code == 400
    assert both.json()["non_field_errors"] == ["give either a definition or a query, not both"]
    unknown = staff_api.post(
        "/api/v1/segments/", {"name": "c", "definition": {"field": "agee", "op": "exists"}}, format="json"
    )
    assert unknown.status_code == 400
    assert unknown.json()["definition"][0].startswith('field: unknown field "agee"')
    assert Segment.objects.count() == 1


def test_a_saved_segments_preview(staff_api):
    ContactFactory(attributes={"city": "Lagos"})
    ContactFactory(attributes={"city": "Accra"})
    segment = services.segment_create(name="lagos", query='city = "Lagos"')
    body = staff_api.get(f"/api/v1/segments/{segment.pk}/preview").json()
    assert (body["count"], len(body["sample"])) == (1, 1)


def test_a_saved_segment_that_no_longer_validates_answers_409_not_everyone(staff_api):
    ContactFactory()
    segment = services.segment_create(name="s", query="age >= 18")
    Segment.objects.filter(pk=segment.pk).update(definition={"field": "attributes.age", "op": "greater", "value": 1})
    response = staff_api.get(f"/api/v1/segments/{segment.pk}/preview")
    assert response.status_code == 409
    assert response.json()["definition"][0].startswith('op: unknown operator "greater"')


def test_the_session_preview_needs_the_csrf_token_the_admin_form_carries(staff_user):
    ContactFactory(attributes={"age": 30})
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    page = client.get("/admin/campaigns/segment/add/")
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    url = "/api/v1/segments/preview"
    refused = client.post(url, {"query": "age > 18"}, content_type="application/json")
    assert refused.status_code == 403
    allowed = client.post(url, {"query": "age > 18"}, content_type="application/json", headers={"X-CSRFToken": token})
    assert allowed.status_code == 200
    assert allowed.json()["count"] == 1
