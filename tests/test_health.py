import pytest

from config import health

pytestmark = pytest.mark.django_db


def test_health_reports_each_part_up(client):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name for name, check in body["checks"].items() if check["ok"]} == {"database", "broker", "cache"}


def test_health_names_the_failed_part(client, settings):
    # Point the broker at a port nothing listens on: a real failed connection, not a mock.
    # (Through the settings fixture alone: monkeypatching it as well left the setting deleted.)
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False


def test_health_fails_when_the_cache_is_down(client, settings):
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
