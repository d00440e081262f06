"""API throttling: one bucket per API token (or per user for a session) and scope, counted in Redis.

A scope is ``read`` (GET, HEAD, OPTIONS) or ``write`` (the rest), or the view's own
``throttle_scope``. Each has its rate in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]; adding a scope
is one line there (``"imports": env.rate("API_THROTTLE_IMPORTS_RATE", "10/hour")``) and
``throttle_scope = "imports"`` on the view. A view whose scope has no rate falls back to read or
write. A throttled request gets 429 with a Retry-After header (DRF's Throttled) saying when the
window ends.

Counting is one atomic step in Redis per request (a Lua script: INCR, and EXPIRE when the window
opens), so concurrent requests are each counted once and exactly the rate passes per window; a
read-then-write of a cached history let most of 1,260 concurrent requests through uncounted.
A window opens with a bucket's first request. Redis down: requests pass (logged), as the rest of
the API fails on its own if the cache is needed.
"""

from __future__ import annotations

import hashlib
import logging

import redis
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from config.observe import redis_client

logger = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
KEY_PREFIX = "mp:throttle:"
# KEYS[1]: the bucket; ARGV[1]: the window in seconds. Returns the count so far and the seconds left.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
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


def _count(key: str, window: int) -> tuple[int, int]:
    global _script
    if _script is None:
        _script = redis_client().register_script(_COUNT)
    count, ttl = _script(keys=[key], args=[window])
    return int(count), int(ttl)


class TokenRateThrottle(SimpleRateThrottle):
    cache_format = KEY_PREFIX + "%(scope)s:%(ident)s"

    def get_rate(self):
        # The scope depends on the request and the view: the rate is looked up in allow_request.
        return None

    def allow_request(self, request, view) -> bool:
        rates = api_settings.DEFAULT_THROTTLE_RATES
        scope = getattr(view, "throttle_scope", None)
        if scope not in rates:
            scope = "read" if request.method in SAFE_METHODS else "write"
        self.scope, self.rate = scope, rates.get(scope)
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        try:
            count, self._seconds_left = _count(key, self.duration)
        except redis.RedisError as exc:
            logger.warning("API throttling skipped, Redis did not answer: %s", exc)
            return True
        return count <= self.num_requests

    def wait(self) -> float | None:
        return max(getattr(self, "_seconds_left", self.duration), 1)

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
