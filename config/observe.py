"""Request counters and latency histograms, summed across every process in Redis.

We run several gunicorn workers and Celery processes, so a counter kept in one process's memory
is not the platform's. Each process adds to a local buffer (a dict increment under a lock, about a
microsecond, nothing on the network) and a timer thread flushes the buffer at most once a
second with one pipelined round trip (HINCRBY / HINCRBYFLOAT on one hash per metric). The
webhook fast path thus pays no Redis call per request; a crashed process loses at most its last
second of counts, which Prometheus' rate() absorbs as it does a counter reset.
``reporting.metrics`` reads the hashes back at scrape time.

Why not prometheus_client's multiprocess mode: it needs a shared directory per host cleaned at
every deploy, does not sum across containers, and its files grow with every worker that ever ran.

Hash layout: ``mp:metrics:<name>`` with a field per label set (labels joined by \\x1f), and for
histograms ``<labels>\\x1e<bucket index>`` / ``\\x1esum`` / ``\\x1ecount``.
"""

from __future__ import annotations

import atexit
import bisect
import logging
import os
import threading
import time
from collections import defaultdict

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

PREFIX = "mp:metrics:"
LABEL_SEP = "\x1f"
PART_SEP = "\x1e"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "webhook_requests_total": ("Provider webhook requests by outcome.", ("view", "outcome")),
}
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "webhook_request_duration_seconds": ("Time to answer a provider webhook.", ("view",)),
    "http_request_duration_seconds": ("Time to answer an API or page request.", ("view", "method", "status")),
}

# Signature failures are also counted per minute, at once (not buffered), for the alert rule.
SIGNATURE_FAILURES_KEY = PREFIX + "signature_failures_per_minute:"
SIGNATURE_FAILURES_TTL = 2 * 3600
# Provider answers that say a sender is being throttled (HTTP 429, WhatsApp's 63018), per sender per
# minute: a retried send that then succeeds keeps no error code on its row, so the alert counts these.
SENDER_THROTTLED_KEY = PREFIX + "sender_throttled:"

_client: redis.Redis | None = None


def redis_client() -> redis.Redis:
    """One client per process (redis-py's pool reconnects by itself after a fork)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    return _client


class _Buffer:
    def __init__(self) -> None:
        self._reset()
        # A forked child (a gunicorn or Celery worker) starts empty: its parent flushes its own counts.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, str], float] = defaultdict(float)
        self.histograms: dict[tuple[str, str], list[float]] = {}
        self.timer_pending = False

    def _observe(self, key: tuple[str, str], seconds: float) -> None:
        """Under the lock."""
        cells = self.histograms.get(key)
        if cells is None:
            cells = self.histograms[key] = [0.0] * (len(LATENCY_BUCKETS) + 3)
        cells[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the last bucket index is +Inf
        cells[-2] += seconds
        cells[-1] += 1

    def observe(self, name: str, labels: tuple[str, ...], seconds: float) -> None:
        with self.lock:
            self._observe((name, LABEL_SEP.join(labels)), seconds)
        self._after_count()

    def webhook(self, view: str, outcome: str, seconds: float) -> None:
        """The webhook's count and time under one lock: this runs on every status callback."""
        with self.lock:
            self.counters[("webhook_requests_total", view + LABEL_SEP + outcome)] += 1
            self._observe(("webhook_request_duration_seconds", view), seconds)
        self._after_count()

    def _after_count(self) -> None:
        # Flushing at once (interval 0) must not wait for a timer an earlier, slower setting left pending.
        if settings.METRICS_FLUSH_SECONDS <= 0:
            self.flush()
        elif not self.timer_pending:
            self.schedule()

    def schedule(self) -> None:
        interval = settings.METRICS_FLUSH_SECONDS
        if interval <= 0:
            self.flush()
            return
        self.timer_pending = True
        timer = threading.Timer(interval, self._timed_flush)
        timer.daemon = True
        timer.start()

    def _timed_flush(self) -> None:
        self.timer_pending = False  # before the swap: a count added after it schedules the next flush
        self.flush()

    def flush(self) -> None:
        with self.lock:
            counters, self.counters = self.counters, defaultdict(float)
            histograms, self.histograms = self.histograms, {}
        if not counters and not histograms:
            return
        pipe = redis_client().pipeline(transaction=False)
        for (name, labels), amount in counters.items():
            pipe.hincrby(PREFIX + name, labels, int(amount))
        for (name, labels), cells in histograms.items():
            key = PREFIX + name
            for index, count in enumerate(cells[:-2]):
                if count:
                    pipe.hincrby(key, f"{labels}{PART_SEP}{index}", int(count))
            pipe.hincrbyfloat(key, f"{labels}{PART_SEP}sum", cells[-2])
            pipe.hincrby(key, f"{labels}{PART_SEP}count", int(cells[-1]))
        try:
            pipe.execute()
        except redis.RedisError as exc:  # metrics never fail a request; these counts are lost
            logger.warning("could not flush request metrics to Redis: %s", exc)


_buffer = _Buffer()
atexit.register(_buffer.flush)


def histogram_observe(name: str, labels: tuple[str, ...], seconds: float) -> None:
    _buffer.observe(name, labels, seconds)


def flush() -> None:
    _buffer.flush()


def webhook_observe(view: str, outcome: str, seconds: float) -> None:
    _buffer.webhook(view, outcome, seconds)


def _minute_count(prefix: str, field: str, what: str) -> None:
    """Add one to ``field`` in this minute's hash under ``prefix`` (kept for the alerts' windows)."""
    key = f"{prefix}{int(time.time() // 60)}"
    try:
        redis_client().pipeline(transaction=False).hincrby(key, field, 1).expire(key, SIGNATURE_FAILURES_TTL).execute()
    except redis.RedisError as exc:
        logger.warning("could not count %s: %s", what, exc)


def _minute_sums(prefix: str, since_epoch: float, until_epoch: float) -> dict[str, int]:
    """{field: count} summed over the whole minutes from ``since_epoch`` to ``until_epoch``."""
    pipe = redis_client().pipeline(transaction=False)
    for minute in range(int(since_epoch // 60), int(until_epoch // 60) + 1):
        pipe.hgetall(f"{prefix}{minute}")
    totals: dict[str, int] = defaultdict(int)
    for counts in pipe.execute():
        for field, count in counts.items():
            totals[field.decode()] += int(count)
    return dict(totals)


def signature_failure_count() -> None:
    """One refused webhook, in this minute's counter (read by the signature-failure alert)."""
    _minute_count(SIGNATURE_FAILURES_KEY, "all", "a webhook signature failure")


def signature_failures_since(since_epoch: float, until_epoch: float) -> int:
    """Refused webhooks in the whole minutes from ``since_epoch`` to ``until_epoch``."""
    return _minute_sums(SIGNATURE_FAILURES_KEY, since_epoch, until_epoch).get("all", 0)


def hash_read(name: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis_client().hgetall(PREFIX + name).items()}


def provider_error_count(sender_id: int | None, throttled: bool) -> None:
    """Count a provider refusal for the sender-throttled alert when it said the sender was throttled."""
    if sender_id is not None and throttled:
        _minute_count(SENDER_THROTTLED_KEY, str(sender_id), "a throttled send")


def senders_throttled_since(since_epoch: float, until_epoch: float) -> dict[str, int]:
    """{sender id: throttled answers} in the whole minutes from ``since_epoch`` to ``until_epoch``."""
    return _minute_sums(SENDER_THROTTLED_KEY, since_epoch, until_epoch)
