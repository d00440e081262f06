"""API throttling counts every request once, atomically in Redis: under concurrency exactly the rate passes."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.core.cache import cache
from django.db import connections
from rest_framework.test import APIClient

from config import throttling
from tests.conftest import _token_client

RATE = 40
REQUESTS = 120
THREADS = 16


@pytest.fixture
def rates(settings):
    cache.clear()  # the cache's Redis database holds the buckets too
    rates = {"read": f"{RATE}/hour", "write": "5/hour", "exports": "2/hour"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    yield
    cache.clear()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("roles")  # a transactional test may follow one that flushed the role groups
def test_concurrent_requests_from_sixteen_threads_let_exactly_the_rate_through(staff_user, rates):
    token = _token_client(staff_user)._credentials["HTTP_AUTHORIZATION"]
    codes: Counter = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def fire(count: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=token)
        barrier.wait()
        try:
            for _ in range(count):
                status = client.get("/api/v1/topics/").status_code
                with lock:
                    codes[status] += 1
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=fire, args=(REQUESTS // THREADS + (n < REQUESTS % THREADS),)) for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert codes == Counter({200: RATE, 429: REQUESTS - RATE})


@pytest.mark.django_db
def test_the_retry_after_says_when_the_window_ends(staff_api, rates):
    for _ in range(5):
        assert staff_api.post("/api/v1/topics/", {"name": f"t{_}"}).status_code == 201
    refused = staff_api.post("/api/v1/topics/", {"name": "late"})
    assert refused.status_code == 429
    assert 3500 < int(refused["Retry-After"]) <= 3600


@pytest.mark.django_db
def test_a_view_with_its_own_scope_counts_apart_with_the_rate_of_one_setting(staff_api, rates, monkeypatch):
    from audience.api import TopicViewSet

    monkeypatch.setattr(TopicViewSet, "throttle_scope", "exports", raising=False)
    codes = [staff_api.get("/api/v1/topics/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    monkeypatch.setattr(TopicViewSet, "throttle_scope", "unknown", raising=False)  # no rate: read's bucket
    assert staff_api.get("/api/v1/topics/").status_code == 200


@pytest.mark.django_db
def test_requests_pass_when_redis_does_not_answer(staff_api, rates, monkeypatch):
    import redis

    def down(key, window, requests=1):
        raise redis.ConnectionError("refused")

    monkeypatch.setattr(throttling, "_count", down)
    assert [staff_api.get("/api/v1/topics/").status_code for _ in range(RATE + 1)][-1] == 200


# --- One scope per door ----------------------------------------------------------------------

DOORS = {  # scope -> a request that reaches its view (refused with 400 after being counted)
    "events": lambda api: api.post("/api/v1/events/", {}, format="json"),
    "messages": lambda api: api.post("/api/v1/messages/", {}, format="json"),
    "imports": lambda api: api.post("/api/v1/contacts/import", {}),
    "write": lambda api: api.post("/api/v1/topics/", {}, format="json"),
    "read": lambda api: api.get("/api/v1/topics/"),
}


@pytest.fixture
def door_rates(settings):
    cache.clear()
    rates = {"events": "4/hour", "messages": "3/hour", "imports": "2/hour", "write": "2/hour", "read": "3/hour"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    yield rates
    cache.clear()


@pytest.mark.django_db
@pytest.mark.parametrize("scope", list(DOORS))
def test_each_door_is_throttled_at_its_own_rate_and_leaves_the_others_open(staff_api, door_rates, scope):
    allowed = int(door_rates[scope].split("/")[0])
    codes = [DOORS[scope](staff_api).status_code for _ in range(allowed + 1)]
    assert 429 not in codes[:allowed] and codes[allowed] == 429
    refused = DOORS[scope](staff_api)
    assert refused.status_code == 429 and 3500 < int(refused["Retry-After"]) <= 3600
    for other, request in DOORS.items():
        if other != scope:
            assert request(staff_api).status_code != 429, other


@pytest.mark.django_db
def test_reads_of_the_events_and_messages_apis_count_as_reads(staff_api, door_rates):
    for _ in range(3):
        assert staff_api.get("/api/v1/events/").status_code == 200
    assert staff_api.get("/api/v1/messages/").status_code == 429
    assert DOORS["events"](staff_api).status_code != 429


def _request(method: str, path: str, url_name: str | None):
    from django.test import RequestFactory
    from django.urls import ResolverMatch

    request = getattr(RequestFactory(), method.lower())(path)
    request.resolver_match = ResolverMatch(lambda r: None, (), {}, url_name=url_name)
    return request


@pytest.mark.parametrize(
    ("method", "path", "url_name", "scope"),
    [
        ("POST", "/api/v1/events/batch", "event-batch", "events"),
        ("POST", "/api/v1/events/batch", None, "events"),
        ("POST", "/api/v1/events/batch/", "some-other-name", "events"),
        ("POST", "/api/v1/events/", "event-list", "events"),
        ("POST", "/api/v1/messages/", "message-list", "messages"),
        ("POST", "/api/v1/messages/7/resolve", "message-resolve", "write"),
        ("POST", "/api/v1/contacts/import", "contacts-import", "imports"),
        ("PATCH", "/api/v1/contacts/7", "contact-detail", "write"),
        ("DELETE", "/api/v1/contacts/7", "contact-detail", "write"),
        ("GET", "/api/v1/events/", "event-list", "read"),
        ("HEAD", "/api/v1/contacts/import", "contacts-import", "read"),
    ],
)
def test_the_scope_follows_the_door_and_the_method(settings, method, path, url_name, scope):
    assert throttling.request_scope(_request(method, path, url_name)) == scope


def test_a_door_whose_scope_has_no_rate_counts_as_a_write(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"read": "1/s", "write": "1/s"}}
    assert throttling.request_scope(_request("POST", "/api/v1/events/", "event-list")) == "write"


def test_the_defaults_leave_room_for_a_production_backend():
    from django.conf import settings

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    per_second = {scope: int(rate.split("/")[0]) / 60 for scope, rate in rates.items()}
    assert rates["imports"].endswith("/min") and all(rate.endswith("/min") for rate in rates.values())
    assert per_second["events"] >= 1000 and per_second["messages"] >= 500
    assert per_second["write"] >= 20 and per_second["read"] >= 100


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("roles")
def test_concurrent_event_posts_let_exactly_the_events_rate_through(staff_user, settings):
    cache.clear()
    rates = {"events": "25/hour", "write": "1/hour", "read": "1/hour"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    token = _token_client(staff_user)._credentials["HTTP_AUTHORIZATION"]
    codes: Counter = Counter()
    lock = threading.Lock()
    threads_count, each = 8, 10
    barrier = threading.Barrier(threads_count)

    def fire() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=token)
        barrier.wait()
        try:
            for _ in range(each):
                status = client.post("/api/v1/events/", {}, format="json").status_code
                with lock:
                    codes[status] += 1
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fire) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.clear()
    assert codes[429] == threads_count * each - 25 and sum(codes.values()) == threads_count * each


@pytest.mark.django_db
def test_a_high_rate_is_counted_in_redis_a_chunk_at_a_time_and_never_passes_the_rate(staff_api, settings, monkeypatch):
    """3,000 an hour: a process counts 3 requests in Redis at once and spends them without a round trip."""
    cache.clear()
    monkeypatch.setattr(throttling, "_permits", throttling._Permits())
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"read": "3000/hour"}}
    calls = []
    counted = throttling._count
    monkeypatch.setattr(throttling, "_count", lambda *args: calls.append(args[2]) or counted(*args))
    assert [staff_api.get("/api/v1/topics/").status_code for _ in range(7)] == [200] * 7
    assert calls == [3, 3, 3]  # three round trips for seven requests
    (key,) = [key.decode() for key in throttling.redis_client().keys(throttling.KEY_PREFIX + "read:*")]
    assert int(throttling.redis_client().get(key)) == 9
    # Other processes took the rest of the window but one request: this one gets that one, no more.
    throttling.redis_client().set(key, 2999, keepttl=True)
    monkeypatch.setattr(throttling, "_permits", throttling._Permits())
    assert staff_api.get("/api/v1/topics/").status_code == 200
    refused = staff_api.get("/api/v1/topics/")
    assert refused.status_code == 429 and 3500 < int(refused["Retry-After"]) <= 3600
    cache.clear()
