"""API throttling: one bucket per API token (or per user for a session) and scope, counted in Redis.

Each door has its own scope, so a backend streaming events never starves, nor is starved by, the
back office's writes:

- ``events``: writes to the events API (``POST /api/v1/events/`` and ``/api/v1/events/batch``);
- ``messages``: transactional sends, ``POST /api/v1/messages/``;
- ``imports``: ``POST /api/v1/contacts/import``;
- ``write``: every other POST, PATCH, PUT and DELETE;
- ``read``: GET, HEAD and OPTIONS, whatever the door.

A door's write scope is found by its URL name in SCOPE_BY_URL_NAME (any ``event-...`` route, and a
path ending in ``events/batch``, count as events), so views need not know about throttling. A view's
own ``throttle_scope`` wins when that scope has a rate. Each scope's rate is in
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] (``API_THROTTLE_<SCOPE>_RATE``); a scope without a rate
falls back to read or write. A throttled request gets 429 with a Retry-After header (DRF's
Throttled) saying when the window ends.

Counting is one atomic step in Redis (a Lua script: INCRBY, and EXPIRE when the window opens; one
round trip), so concurrent requests are each counted once and never more than the rate passes per
window; a read-then-write of a cached history let most of 1,260 concurrent requests through
uncounted. A window opens with a bucket's first request. For a rate of a thousand a window or
more, a process counts a chunk at a time (``chunk``: a thousandth of the rate, at most 100): one
INCRBY takes that many requests' worth of the bucket, and the process's next requests spend them
without a round trip (the Redis call was a fifth of a single event's CPU). Still never more than
the rate passes; a client at its limit may be refused up to a chunk per process early (permits
held by another process when the window ends), 0.1 % of the rate each. Redis down: requests pass
(logged), as the rest of the API fails on its own if the cache is needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time

import redis
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from config.observe import redis_client

logger = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
KEY_PREFIX = "mp:throttle:"
READ, WRITE, EVENTS, MESSAGES, IMPORTS = "read", "write", "events", "messages", "imports"
# Write doors with a scope of their own, by URL name.
SCOPE_BY_URL_NAME = {
    "event-list": EVENTS,  # POST /api/v1/events/
    "event-batch": EVENTS,  # POST /api/v1/events/batch
    "events-batch": EVENTS,
    "message-list": MESSAGES,  # POST /api/v1/messages/: one transactional message
    "contacts-import": IMPORTS,  # POST /api/v1/contacts/import
}
EVENTS_URL_PREFIX = "event-"
EVENTS_BATCH_PATH = "/events/batch"

# KEYS[1]: the bucket; ARGV[1]: the window in seconds; ARGV[2]: how many requests to count.
# Returns the count so far and the seconds left.
_COUNT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""
_script = None


def _count(key: str, window: int, requests: int = 1) -> tuple[int, int]:
    global _script
    if _script is None:
        _script = redis_client().register_script(_COUNT)
    count, ttl = _script(keys=[key], args=[window, requests])
    return int(count), int(ttl)


CHUNK_DIVISOR = 1000
MAX_CHUNK = 100


def chunk(num_requests: int) -> int:
    """How many requests of a bucket with this rate a process counts in Redis at once."""
    return max(1, min(MAX_CHUNK, num_requests // CHUNK_DIVISOR))


class _Permits:
    """Requests a process has counted in Redis and not spent yet: {bucket: [left, window ends (monotonic)]}."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, list[float]] = {}

    def take(self, key: str, window: int, limit: int) -> tuple[bool, float]:
        """(allowed, seconds until the window ends) for one request on ``key``."""
        now = time.monotonic()
        with self.lock:
            held = self.held.get(key)
            if held is not None and held[0] >= 1 and held[1] > now:
                held[0] -= 1
                return True, held[1] - now
        size = chunk(limit)
        count, ttl = _count(key, window, size)
        granted = max(0, min(size, limit - (count - size)))  # what of this chunk is within the rate
        with self.lock:
            if len(self.held) > 10_000:  # forget ended windows now and then
                self.held = {k: v for k, v in self.held.items() if v[1] > now}
            if granted and size > 1:
                held = self.held.get(key)
                if held is not None and held[1] > now:
                    held[0] += granted - 1
                else:
                    self.held[key] = [granted - 1, now + ttl]
        return granted > 0, ttl


_permits = _Permits()


def request_scope(request, view=None) -> str:
    """The scope a request is counted in: the view's own, its door's, else read or write."""
    rates = api_settings.DEFAULT_THROTTLE_RATES
    own = getattr(view, "throttle_scope", None)
    if own in rates:
        return own
    if request.method in SAFE_METHODS:
        return READ
    match = getattr(request, "resolver_match", None)
    name = (match.url_name if match else None) or ""
    scope = SCOPE_BY_URL_NAME.get(name)
    if scope is None and (name.startswith(EVENTS_URL_PREFIX) or request.path.rstrip("/").endswith(EVENTS_BATCH_PATH)):
        scope = EVENTS
    return scope if scope in rates else WRITE


class TokenRateThrottle(SimpleRateThrottle):
    cache_format = KEY_PREFIX + "%(scope)s:%(ident)s"

    def get_rate(self):
        # The scope depends on the request and the view: the rate is looked up in allow_request.
        return None

    def allow_request(self, request, view) -> bool:
        self.scope = request_scope(request, view)
        self.rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        try:
            allowed, self._seconds_left = _permits.take(key, self.duration, self.num_requests)
        except redis.RedisError as exc:
            logger.warning("API throttling skipped, Redis did not answer: %s", exc)
            return True
        return allowed

    def wait(self) -> float | None:
        return max(int(getattr(self, "_seconds_left", self.duration)), 1)

    def get_cache_key(self, request, view) -> str | None:
        auth = getattr(request, "auth", None)
        key = getattr(auth, "key", None)
        if key:
            ident = "token:" + hashlib.sha256(key.encode()).hexdigest()[:32]  # no secret in Redis keys
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            return None  # anonymous requests are refused with 401 before they cost anything
        return self.cache_format % {"scope": self.scope, "ident": ident}
