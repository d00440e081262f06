"""One request rate to the provider's API for price lookups, shared by every worker through Redis.

A window of one second holds at most ``rate`` requests (a counter per second, ``INCR`` + expiry):
two task runs at once, on two workers, share the rate instead of doubling it. A fractional rate
(0.5/s) is kept over a window of several seconds. Time comes from the caller's clock, so a test
drives it without waiting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis
from django.conf import settings

KEY = "messaging:pricing:pace:{window}"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


class Pace:
    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        client: redis.Redis | None = None,
    ):
        # A window long enough to hold a whole request at this rate: 1 s from 1/s up.
        self.window = max(1.0, math.ceil(1.0 / rate))
        self.per_window = max(1, int(rate * self.window))
        self.clock, self.sleep = clock, sleep
        self.client = client or _redis()

    def wait(self) -> None:
        """Return when one more request fits in the current window (sleeping into the next if not)."""
        while True:
            now = self.clock()
            window = int(now // self.window)
            key = KEY.format(window=window)
            with self.client.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, int(self.window) + 5)
                taken = pipe.execute()[0]
            if taken <= self.per_window:
                return
            self.sleep(max((window + 1) * self.window - now, 0.001))
