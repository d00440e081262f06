import pytest
from rest_framework.authtoken.models import Token

from config import health

pytestmark = pytest.mark.django_db

BROKER_DOWN = "redis://127.0.0.1:1/0"  # a port nothing listens on: a real failed connection, not a mock


def test_health_reports_each_part_up_to_staff(client, staff_user):
    client.force_login(staff_user)
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name for name, check in body["checks"].items() if check["ok"]} == {"database", "broker", "cache"}


def test_anyone_learns_only_ok_when_every_part_is_up(client):
    response = client.get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_anyone_learns_only_down_when_a_part_fails_not_which_or_why(client, settings, caplog):
    # Through the settings fixture alone: monkeypatching it as well left the setting deleted.
    settings.CELERY_BROKER_URL = BROKER_DOWN
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json() == {"status": "down"}
    assert "127.0.0.1" not in response.content.decode() and "Error" not in response.content.decode()
    # The reason is not lost: operators find it in the log.
    assert any("health check broker failed" in record.getMessage() for record in caplog.records)


def test_a_staff_session_sees_which_part_failed_and_why(client, settings, staff_user):
    settings.CELERY_BROKER_URL = BROKER_DOWN
    client.force_login(staff_user)
    response = client.get("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False and body["checks"]["broker"]["error"]


def test_a_staff_token_sees_the_details(client, settings, staff_user):
    settings.CELERY_BROKER_URL = BROKER_DOWN
    token = Token.objects.create(user=staff_user)
    body = client.get("/health/", HTTP_AUTHORIZATION=f"Token {token.key}").json()
    assert body["failed"] == ["broker"] and "error" in body["checks"]["broker"]


def test_an_analyst_or_a_bad_token_learns_only_down(client, settings, analyst_user):
    settings.CELERY_BROKER_URL = BROKER_DOWN
    token = Token.objects.create(user=analyst_user)
    for authorization in (f"Token {token.key}", "Token not-a-real-token", "Token"):
        response = client.get("/health/", HTTP_AUTHORIZATION=authorization)
        assert (response.status_code, response.json()) == (503, {"status": "down"}), authorization
    client.force_login(analyst_user)
    assert client.get("/health/").json() == {"status": "down"}


def test_health_fails_when_the_cache_is_down(client, settings, staff_user):
    client.force_login(staff_user)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.5},
        }
    }
    response = client.get("/health/")
    assert response.status_code == 503
    assert "cache" in response.json()["failed"]
    assert health.CHECKS.keys() == {"database", "broker", "cache"}
