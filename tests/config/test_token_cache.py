"""API tokens are remembered per process for API_TOKEN_CACHE_SECONDS: no query per request, revocation within it."""

import pytest
from rest_framework.authtoken.models import Token

from config import auth

pytestmark = pytest.mark.django_db


def test_a_remembered_token_costs_no_query(staff_api, django_assert_num_queries):
    assert staff_api.get("/api/v1/events/").status_code == 200
    with django_assert_num_queries(1):  # the page of events; nothing for the token or the roles
        assert staff_api.get("/api/v1/events/").status_code == 200


def test_a_deleted_token_is_refused_once_the_memory_expires(staff_api, settings, monkeypatch):
    assert staff_api.get("/api/v1/events/").status_code == 200
    Token.objects.all().delete()
    assert staff_api.get("/api/v1/events/").status_code == 200  # within API_TOKEN_CACHE_SECONDS
    now = auth.time.monotonic()
    monkeypatch.setattr(auth.time, "monotonic", lambda: now + settings.API_TOKEN_CACHE_SECONDS + 1)
    assert staff_api.get("/api/v1/events/").status_code == 401


def test_zero_seconds_looks_the_token_up_every_time(staff_api, settings):
    settings.API_TOKEN_CACHE_SECONDS = 0
    assert staff_api.get("/api/v1/events/").status_code == 200
    Token.objects.all().delete()
    assert staff_api.get("/api/v1/events/").status_code == 401


def test_an_unknown_token_is_refused_and_not_remembered(anon_api):
    anon_api.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert anon_api.get("/api/v1/events/").status_code == 401
    assert auth._entries == {}
