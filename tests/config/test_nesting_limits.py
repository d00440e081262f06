"""Input nested too deep is a 400 naming where, at every door that decodes JSON or parses a query; never a 500."""

import hashlib
import json

import pytest
from django import forms
from django.contrib import admin
from django.test import RequestFactory
from django.urls import get_resolver
from rest_framework import serializers

from audience.models import Contact
from campaigns.models import Segment
from config.json_limits import DepthLimitedJSONDecoder, nested_deeper_than
from messaging.models import Message, MessageStatus, ProviderCallback
from tests.twilio_webhooks import PUBLIC, SID, STATUS_PATH, TOKEN, signature, status_payload

pytestmark = pytest.mark.django_db

LIMIT = 64
BRACKETS = "[" * 100_000


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_the_limit_counts_containers_and_allows_exactly_the_limit(settings):
    assert settings.JSON_MAX_DEPTH == LIMIT
    assert not nested_deeper_than(nested(LIMIT), LIMIT) and nested_deeper_than(nested(LIMIT + 1), LIMIT)
    assert json.loads(json.dumps({"a": nested(LIMIT - 1)}), cls=DepthLimitedJSONDecoder) == {"a": nested(LIMIT - 1)}
    with pytest.raises(json.JSONDecodeError, match=f"nested deeper than {LIMIT} levels") as refused:
        json.loads('{"a": ' + json.dumps(nested(LIMIT)) + "}", cls=DepthLimitedJSONDecoder)
    assert refused.value.pos == 6 + LIMIT - 1  # the first bracket past the limit


# --- Webhooks -------------------------------------------------------------------------------


def _post_signed_json(client, raw: str):
    path = f"{STATUS_PATH}?bodySHA256={hashlib.sha256(raw.encode()).hexdigest()}"
    sig = signature(PUBLIC + path)
    return client.post(path, data=raw, content_type="application/json", headers={"X-Twilio-Signature": sig})


@pytest.mark.parametrize("levels", [LIMIT + 1, 600, 60_000])  # the last within the webhooks' 64 KB
def test_a_signed_json_webhook_nested_too_deep_is_a_400_and_stores_nothing(client, settings, levels):
    settings.TWILIO_AUTH_TOKEN, settings.PUBLIC_BASE_URL = TOKEN, PUBLIC
    Message.objects.create(channel="whatsapp", provider_sid=SID, status=MessageStatus.QUEUED)
    payload = json.dumps(status_payload(SID, "read", whatsapp=True))
    raw = payload[:-1] + ', "Extra": ' + ("[" * levels + "]" * levels if levels < 1000 else "[" * levels) + "}"
    response = _post_signed_json(client, raw)
    assert response.status_code == 400
    assert f"nested deeper than {LIMIT} levels" in response.content.decode()
    assert not ProviderCallback.objects.exists() and Message.objects.get().status == MessageStatus.QUEUED


# --- The API --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [BRACKETS, json.dumps({"phone": "+254712345678", "attributes": {"a": nested(600)}})])
def test_an_api_json_body_nested_too_deep_is_a_400(staff_api, body):
    response = staff_api.post("/api/v1/contacts/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert f"nested deeper than {LIMIT} levels" in response.json()["detail"]
    assert not Contact.objects.exists()


def test_a_json_field_sent_as_a_form_field_nested_too_deep_is_a_400_naming_it(staff_api):
    response = staff_api.post("/api/v1/contacts/", data={"phone": "+254712345678", "attributes": BRACKETS})
    assert response.status_code == 400
    assert "attributes" in response.json()
    assert not Contact.objects.exists()


@pytest.mark.parametrize("query", ["(" * 4000, "NOT " * 2000 + "age > 1", "(" * 4000 + "age > 1" + ")" * 4000])
def test_a_segment_query_nested_too_deep_is_a_400_naming_the_query(analyst_api, query):
    response = analyst_api.post("/api/v1/segments/preview", {"query": query}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "query" and "nested deeper than 20 levels" in error["message"]
    assert error["column"] == 21 * (4 if query.startswith("NOT") else 1) - (3 if query.startswith("NOT") else 0)


def test_a_segment_query_with_a_reasonable_nesting_still_parses(analyst_api):
    query = "(" * 19 + "age > 1" + ")" * 19
    response = analyst_api.post("/api/v1/segments/preview", {"query": query}, format="json")
    assert response.status_code == 200, response.json()


# Serializers that only ever render responses: their JSON fields never decode input.
RESPONSE_ONLY = {
    "CampaignRunSerializer",
    "CampaignActionSerializer",
    "SampleContactSerializer",
    "ConsentEventSerializer",
}


def test_every_writable_api_json_field_limits_the_nesting_of_form_input():
    """A JSON field sent form-encoded is decoded by the field itself: each must use the limited decoder."""
    assert get_resolver().url_patterns  # every API module imported, so every serializer class defined
    found = []
    pending = [serializers.Serializer]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        apps = ("audience.", "messaging.", "campaigns.", "reporting.")
        if cls.__name__ in RESPONSE_ONLY or not cls.__module__.startswith(apps):
            continue
        for name, field in cls().fields.items():
            if isinstance(field, serializers.JSONField) and not field.read_only:
                found.append(f"{cls.__name__}.{name}")
                assert field.decoder is DepthLimitedJSONDecoder, f"{cls.__name__}.{name}"
    assert {"ContactSerializer.attributes", "SegmentSerializer.definition", "EventCreateSerializer.properties"} <= set(
        found
    )


# --- The admin ------------------------------------------------------------------------------


def test_an_admin_json_field_nested_too_deep_is_a_form_error(staff_client):
    page = staff_client.post("/admin/campaigns/segment/add/", {"name": "Deep", "query": "", "definition": BRACKETS})
    assert page.status_code == 200
    assert "Enter a valid JSON." in page.content.decode()  # Django's own message for its JSON field
    assert not Segment.objects.exists()


def test_an_admin_query_nested_too_deep_is_a_form_error(staff_client):
    page = staff_client.post("/admin/campaigns/segment/add/", {"name": "Deep", "query": "(" * 4000, "definition": ""})
    assert page.status_code == 200
    assert "nested deeper than 20 levels" in page.content.decode()


def test_every_admin_json_form_field_limits_the_nesting(staff_user):
    request = RequestFactory().get("/")
    request.user = staff_user
    staff_user.is_superuser = True
    checked = []
    for model, model_admin in admin.site._registry.items():
        if not (model_admin.has_add_permission(request) or model_admin.has_change_permission(request)):
            continue  # read-only pages: no form is ever posted
        for name, field in model_admin.get_form(request).base_fields.items():
            if isinstance(field, forms.JSONField):
                checked.append(f"{model._meta.label}.{name}")
                assert field.decoder is DepthLimitedJSONDecoder, f"{model._meta.label}.{name}"
    assert {"audience.Contact.attributes", "campaigns.Segment.definition"} <= set(checked)
