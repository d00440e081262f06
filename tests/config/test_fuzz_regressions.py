"""Problems the fuzzers found, each kept as a plain test (`make fuzz` runs the fuzzers themselves)."""

import json

import pytest

from messaging.models import Message, ProviderCallback
from tests.twilio_webhooks import (
    INBOUND_PATH,
    PUBLIC,
    STATUS_PATH,
    TOKEN,
    inbound_payload,
    post_form,
    post_json,
    status_payload,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def twilio_settings(settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.PUBLIC_BASE_URL = PUBLIC


# tests/messaging/test_webhooks_fuzz.py, replays: body='\x9e\x8fZ\x00 ...' gave a 500 (PostgreSQL DataError:
# text fields cannot contain NUL bytes). Now 400 and nothing stored.
def test_an_inbound_body_with_a_nul_byte_is_refused_not_a_500(client):
    response = post_form(client, INBOUND_PATH, inbound_payload("SM" + "0a" * 16, "Z\x00 hi"))
    assert response.status_code == 400
    assert "NUL" in response.content.decode()
    assert not Message.objects.exists() and not ProviderCallback.objects.exists()


def test_a_status_callback_with_a_nul_byte_anywhere_is_refused(client):
    response = post_form(client, STATUS_PATH, status_payload("SM" + "0b" * 16, "sent") | {"X\x00": "1"})
    assert response.status_code == 400
    assert not ProviderCallback.objects.exists()


def test_a_json_callback_with_a_nested_nul_is_refused(client):
    params = status_payload("SM" + "0c" * 16, "sent") | {"Extra": {"deep": ["a\x00b"]}}
    response = post_json(client, STATUS_PATH, params, body=json.dumps(params))
    assert response.status_code == 400
    assert not ProviderCallback.objects.exists()


# make fuzz, GET /api/v1/events/?occurred_after=1661-02-03T17:58:11-21:55 gave a 500 (PostgreSQL:
# "time zone displacement out of range"; it stops at ±15:59 where Python allows ±23:59). Date
# filters now turn their value to UTC first, and a value that leaves the calendar is a 400.
@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/events/?occurred_after=1661-02-03T17%3A58%3A11-21%3A55",
        "/api/v1/contacts/?created_before=2020-01-01T00%3A00%3A00%2B23%3A59",
        "/api/v1/reporting/messages/status?created_after=1661-02-03T17%3A58%3A11-21%3A55",
    ],
)
def test_a_date_filter_with_an_offset_postgresql_refuses_is_not_a_500(analyst_api, url):
    assert analyst_api.get(url).status_code == 200


@pytest.mark.parametrize("url", ["/api/v1/events/", "/api/v1/contacts/"])
def test_a_date_filter_that_leaves_the_calendar_names_the_parameter(analyst_api, url):
    response = analyst_api.get(
        url, {"received_before" if "events" in url else "created_after": "0001-01-01T00:00:00+05:00"}
    )
    assert response.status_code == 400
    assert ("received_before" if "events" in url else "created_after") in response.json()
