"""The segment admin: typed in the query syntax or JSON, errors on the form, live count on the page."""

import json
from pathlib import Path

import pytest

from campaigns import services
from campaigns.models import Segment
from tests.factories import ContactFactory, TopicFactory

pytestmark = pytest.mark.django_db

ADD = "/admin/campaigns/segment/add/"


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_the_add_page_loads_the_live_preview(staff_client):
    page = staff_client.get(ADD)
    assert page.status_code == 200
    html = page.content.decode()
    assert "campaigns/segment_preview.js" in html
    assert 'id="segment-preview" data-url="/api/v1/segments/preview"' in html


def test_the_preview_script_is_served_from_our_static_files(staff_client):
    from django.contrib.staticfiles import finders

    script = finders.find("campaigns/segment_preview.js")
    assert script is not None
    source = Path(script).read_text()
    assert "X-CSRFToken" in source and "/api/v1/segments/preview" not in source  # the URL comes from the page


def test_a_query_error_is_shown_on_the_form_with_its_caret(staff_client):
    page = staff_client.post(ADD, {"name": "Adults", "query": "age >= 18 AND city =", "definition": ""})
    assert page.status_code == 200
    html = page.content.decode()
    assert "expected a value after &#x27;=&#x27; at column 21" in html
    assert '<pre class="segment-error">age &gt;= 18 AND city =\n                    ^</pre>' in html
    assert not Segment.objects.exists()


def test_a_json_error_is_shown_on_the_form(staff_client):
    definition = json.dumps({"field": "attributes.age", "op": "gt", "value": "abc", "type": "number"})
    page = staff_client.post(ADD, {"name": "Adults", "query": "", "definition": definition})
    assert page.status_code == 200
    assert "value: expected a number for attributes.age, got &quot;abc&quot;" in page.content.decode()
    assert not Segment.objects.exists()


def test_staff_create_a_segment_with_the_query_syntax(staff_client, staff_user):
    TopicFactory(name="vip")
    response = staff_client.post(ADD, {"name": "Adults", "query": 'age >= 18 AND NOT topic = "vip"', "definition": ""})
    assert response.status_code == 302
    segment = Segment.objects.get()
    assert segment.query == 'age >= 18 AND NOT topic = "vip"'
    assert segment.definition["all"][0] == {"field": "attributes.age", "op": "gte", "value": 18}
    assert segment.created_by == staff_user


def test_staff_create_a_segment_with_json(staff_client):
    definition = {"field": "email", "op": "exists"}
    response = staff_client.post(ADD, {"name": "Emails", "query": "", "definition": json.dumps(definition)})
    assert response.status_code == 302
    assert Segment.objects.get().definition == definition


def test_the_change_page_shows_the_count_and_a_sample(staff_client):
    ContactFactory(name="Amina", attributes={"age": 30})
    ContactFactory(name="Baraka", attributes={"age": 40})
    ContactFactory(name="Chidi", attributes={"age": 10})
    segment = services.segment_create(name="Adults", query="age >= 18")
    html = staff_client.get(f"/admin/campaigns/segment/{segment.pk}/change/").content.decode()
    assert "<strong>2</strong> contacts match, 2 of them opted in." in html
    assert "Amina" in html and "Baraka" in html and "Chidi" not in html


def test_a_segment_made_from_json_is_edited_as_a_query(staff_client):
    segment = services.segment_create(name="s", definition={"field": "attributes.age", "op": "lt", "value": 3})
    url = f"/admin/campaigns/segment/{segment.pk}/change/"
    assert "age &lt; 3</textarea>" in staff_client.get(url).content.decode()
    response = staff_client.post(url, {"name": "s", "query": "age < 5", "definition": json.dumps(segment.definition)})
    assert response.status_code == 302
    segment.refresh_from_db()
    assert (segment.query, segment.definition) == ("age < 5", {"field": "attributes.age", "op": "lt", "value": 5})


def test_editing_only_the_json_replaces_the_query(staff_client):
    segment = services.segment_create(name="s", query="age < 3")
    url = f"/admin/campaigns/segment/{segment.pk}/change/"
    new = {"field": "email", "op": "exists"}
    response = staff_client.post(url, {"name": "s", "query": "age < 3", "definition": json.dumps(new)})
    assert response.status_code == 302
    segment.refresh_from_db()
    assert (segment.query, segment.definition) == ("", new)


def test_analysts_cannot_add_segments_in_the_admin(client, analyst_user):
    client.force_login(analyst_user)
    assert client.get(ADD).status_code == 403


def test_the_list_shows_each_rule_as_a_query(staff_client):
    services.segment_create(name="typed", query="age   >= 18")
    services.segment_create(name="json", definition={"field": "email", "op": "exists"})
    html = staff_client.get("/admin/campaigns/segment/").content.decode()
    assert "age   &gt;= 18" in html
    assert "email exists" in html
