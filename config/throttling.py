"""API throttling: one bucket per API token (or per user for a session), reads and writes apart.

Rates come from API_THROTTLE_READ_RATE and API_THROTTLE_WRITE_RATE. A throttled request gets
429 with a Retry-After header (DRF's Throttled) saying when to come back.
"""

from __future__ import annotations

import hashlib

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class TokenRateThrottle(SimpleRateThrottle):
    def get_rate(self):
        # The scope depends on the request, so the rate is looked up in get_cache_key.
        return None

    def allow_request(self, request, view) -> bool:
        self.scope = "read" if request.method in SAFE_METHODS else "write"
        self.rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

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
