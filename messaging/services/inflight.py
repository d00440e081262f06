"""How many provider calls a sender keeps in flight: its MPS times the provider's latency.

A sender limited to ``mps`` messages a second, whose provider answers in ``latency`` seconds on
average, needs ``mps * latency`` requests in flight to reach its limit (Little's law): 80 MPS at
300 ms needs 24 at once, 400 MPS at a 340 ms mean about 136. Fewer caps the rate at in-flight /
latency whatever the pacing allows; more only adds connections. So:

- ``LatencyGauge`` follows the latency observed for a sender in this process (a moving mean), and
  is published to Redis, where the dry run reads it for its duration estimate.
- ``InFlightLimit`` is one dispatcher's cap: ``mps * latency * HEADROOM``, at least ``mps`` (a
  pacing window's sends may all leave at once), plus ``SPARE``, within the configured ceilings.
  A "too many requests" answer (Twilio's 429 / 20429: its REST concurrency limit) cuts it
  multiplicatively and pauses new requests briefly; answers that follow raise it by one per
  cap's worth of successes (AIMD, as TCP does).

Pacing (``messaging.pacing``) is what keeps the rate within MPS; the in-flight cap only has to be
large enough not to be the limit.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

HEADROOM = 1.5  # the in-flight count swings around its mean: room for a slow stretch
SPARE = 4
EWMA_WEIGHT = 0.02  # per observation: about the last 50 calls
CUT = 0.7  # a throttled cap becomes this share of what was in flight
PAUSE = (0.5, 1.0)  # seconds without new requests after a throttled answer
PUBLISHED_FOR = 24 * 3600  # seconds Redis keeps a sender's latency
TAIL_SAMPLES = 512  # calls the latency's tail is read from
CAPACITY_KEY = "delivery:capacity"


class LatencyGauge:
    """The provider latency seen for one sender in this process: a moving mean, and the tail of the last calls."""

    def __init__(self, initial: float):
        self.value = initial
        self.samples = 0
        self._recent: deque[float] = deque(maxlen=TAIL_SAMPLES)
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.samples += 1
            weight = max(EWMA_WEIGHT, 1 / self.samples)  # the first calls replace the guess quickly
            self.value += weight * (seconds - self.value)
            self._recent.append(seconds)

    def tail(self) -> float:
        """The 99th percentile of the last calls (the mean until there are some)."""
        with self._lock:
            recent = sorted(self._recent)
        return recent[min(len(recent) - 1, int(0.99 * len(recent)))] if recent else self.value


_gauges: dict[int, LatencyGauge] = {}
_gauges_lock = threading.Lock()


def latency_gauge(sender_id: int) -> LatencyGauge:
    with _gauges_lock:
        gauge = _gauges.get(sender_id)
        if gauge is None:
            known = latency_observed(sender_id)
            gauge = _gauges[sender_id] = LatencyGauge(known.mean if known else settings.DELIVERY_LATENCY_GUESS)
        return gauge


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)


def _latency_key(sender_id: int) -> str:
    return f"delivery:latency:sender:{sender_id}"


@dataclass(frozen=True)
class Latency:
    mean: float  # seconds: sizes the requests in flight
    tail: float  # seconds, the 99th percentile: when the last of a run's answers comes back


def latency_publish(sender_id: int, gauge: LatencyGauge) -> None:
    try:
        _redis().set(_latency_key(sender_id), f"{gauge.value:.4f} {gauge.tail():.4f}", ex=PUBLISHED_FOR)
    except redis.RedisError:
        pass  # a figure for estimates; the next flush publishes again


def latency_observed(sender_id: int) -> Latency | None:
    """The sender's provider latency last published by a dispatcher (None: not measured lately)."""
    try:
        value = _redis().get(_latency_key(sender_id))
    except redis.RedisError:
        return None
    if not value:
        return None
    mean, _, tail = value.decode().partition(" ")
    return Latency(float(mean), float(tail or mean))


def latency_forget(sender_id: int) -> None:
    with _gauges_lock:
        _gauges.pop(sender_id, None)
    try:
        _redis().delete(_latency_key(sender_id))
    except redis.RedisError:
        pass


def capacity_observe(messages_per_second: float) -> None:
    """A run that was not held back by its sender's MPS measured what the platform sustains."""
    try:
        known = _redis().get(CAPACITY_KEY)
        value = messages_per_second if not known else 0.7 * float(known) + 0.3 * messages_per_second
        _redis().set(CAPACITY_KEY, f"{value:.1f}")
    except redis.RedisError:
        pass


def capacity() -> float:
    """Messages per second the platform sustains for an unlimited sender: measured, else the setting."""
    try:
        known = _redis().get(CAPACITY_KEY)
    except redis.RedisError:
        known = None
    return float(known) if known else settings.DELIVERY_CAPACITY_MPS


class InFlightLimit:
    """One dispatcher's cap on provider calls in flight; used from the dispatcher's thread only."""

    def __init__(self, mps: float, gauge: LatencyGauge, ceiling: int | None = None):
        self.mps = mps
        self.gauge = gauge
        ceiling = ceiling or settings.DELIVERY_MAX_IN_FLIGHT_PER_SENDER
        self.ceiling = max(1, min(ceiling, settings.DELIVERY_MAX_IN_FLIGHT))
        self.allowed = float(self.ceiling)  # lowered by throttling, raised back by successes
        self.paused_until = 0.0

    def wanted(self) -> int:
        """Little's law with headroom, and at least a whole second's worth: the pacing lets a
        window's ``mps`` sends leave together, so a second's sends can all be out at once."""
        return max(math.ceil(self.mps * self.gauge.value * HEADROOM), math.ceil(self.mps)) + SPARE

    def cap(self) -> int:
        if time.monotonic() < self.paused_until:
            return 0
        return max(1, min(self.wanted(), self.ceiling, int(self.allowed)))

    def throttled(self, in_flight: int) -> None:
        """The provider refused for too many concurrent requests: fewer in flight, and a short pause."""
        self.allowed = max(1.0, min(self.allowed, max(in_flight, 1)) * CUT)
        self.paused_until = time.monotonic() + random.uniform(*PAUSE)
        logger.warning("provider throttled: at most %d requests in flight for now", int(self.allowed))

    def answered(self) -> None:
        if self.allowed < self.ceiling:
            self.allowed = min(float(self.ceiling), self.allowed + 1 / self.allowed)
