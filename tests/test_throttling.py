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
from tests.fixtures.ingest.helpers import roles  # noqa: F401 - fixture

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

    def down(key, window):
        raise redis.ConnectionError("refused")

    monkeypatch.setattr(throttling, "_count", down)
    assert [staff_api.get("/api/v1/topics/").status_code for _ in range(RATE + 1)][-1] == 200
