"""Global per-sender pacing in Redis, shared by every worker, thread and process.

No window of one second may see more than the sender's MPS. A token bucket of capacity ``b``
refilled at ``r`` lets ``b + r`` through in a second, so a strict bucket has ``b = 1``: sends
evenly spaced ``1 / mps`` apart, where any lateness of one send (a thread waking late, a busy
core) squeezes it against the next and needs a safety margin paid on every send of the run.

So each sender keeps a sliding-window log instead: the times of its last ``mps`` sends, in one
Redis list moved by one Lua script (two callers can never take the same place). A send may go
when the ``mps``-th previous one is at least ``WINDOW`` (one second plus ``SLACK``) old, so
``mps`` sends go at once and the next ``mps`` a window later, and a run of N messages takes
about ``(N / mps - 1) * WINDOW`` seconds. A send whose request leaves later than its slot (a
busy core, a thread waking late, waiting for a free connection) moves its slot to when it left
(``slot_started``, called once the request has been written to the network), so the sends a
window later keep their distance from the real one; the slack only has to absorb the moment
between the request reaching the provider and that mark, and is paid once per window instead
of on every send. Time comes from Redis (``TIME``), never from the workers'
clocks. Senders above ``LOG_MAX_MPS`` (no real sender; the unthrottled benchmark) use an evenly
spaced schedule (GCRA) instead of a long list. Redis holds nothing that cannot be rebuilt: a
lost key only forgets the last second.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

# Jitter absorbed between a request reaching the provider and its mark (``slot_started``).
SLACK = 0.03
WINDOW = 1.0 + SLACK
LOG_MAX_MPS = 2000
# The evenly spaced schedule (above LOG_MAX_MPS): slots a hair further apart than 1/mps.
MARGIN = 1.02
# The most a request may be handed over before its slot's time, so that it is written at about
# that time; well inside SLACK, which also absorbs the network's jitter.
MAX_LEAD = 0.01
# Lateness a send may have without moving its slot: a late send otherwise pushes every send an
# mps after it later too, and timer jitter alone would add up to a lower rate over a long run.
# SLACK covers it, MAX_LEAD and 15 ms of jitter between a request's write and its arrival.
TOLERANCE = 0.005
# How far ahead a caller may reserve; beyond this it waits without reserving, so a paused
# run does not hold slots that another run on the sender could use, and notices the pause soon.
MAX_AHEAD = 0.25
REDIS_DOWN_GIVE_UP = 120.0  # seconds a pacer waits for Redis before telling its caller to stop
LEAD_WEIGHT = 0.1  # per send: how fast the hand-over lead follows the requests' lateness

_RESERVE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local ahead = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > ahead then
  return {0, wait - ahead, tat}
end
-- The number itself, not tostring(): Lua prints 14 digits, 100 us steps at today's 16-digit times;
-- Redis writes a number argument with all 17.
redis.call('SET', KEYS[1], tat + interval, 'PX', math.floor((tat + interval - now) / 1000) + 60000)
return {1, wait, tat}
"""


# KEYS[1] the log (a sorted set: slot id -> its time in microseconds), KEYS[2] the id sequence;
# ARGV: mps, window, ahead. A slot goes at max(now, the mps-th latest slot + window); the set
# keeps the mps latest slots.
_LOG = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local ahead = tonumber(ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local at = now
if n >= limit then
  local base = tonumber(redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')[2]) + window
  if base > at then at = base end
end
local wait = at - now
if wait > ahead then
  return {0, wait - ahead, at, 0}
end
local id = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], at, id)
if n + 1 > limit then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - limit) end
local ttl = math.floor((at - now + window) / 1000) + 60000
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {1, wait, at, id}
"""

# ARGV: mps, window. How many sends the sender's log has room for now (reserved ones count), and,
# when none, the microseconds until one has.
_ROOM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local since = now - window + 1
local inside = redis.call('ZCOUNT', KEYS[1], since, '+inf')
if inside < limit then
  return {limit - inside, 0}
end
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', inside - limit, 1)
return {0, tonumber(oldest[2]) + window - now}
"""

# A slot is moved to when its request was written (ARGV[2]: the lateness tolerated without a
# move), so the slots an mps later (taken at most MAX_AHEAD before their time) keep a full window
# after the real send. A send that left early (by at most the caller's lead) moves it earlier.
_STARTED = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at and (now < tonumber(at) or now > tonumber(at) + tonumber(ARGV[2])) then
  redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
end
return now
"""


@dataclass(frozen=True)
class Slot:
    granted: bool
    wait: float  # seconds: until the slot (granted) or until asking again makes sense
    at_us: int  # the slot's time on Redis' clock, microseconds since the epoch
    slot_id: int = 0  # in the sender's log (0: an evenly spaced slot, nothing to move)
    # Redis' clock minus this machine's when the slot was granted, at most (the moment Redis read its
    # clock is after the call left): now on Redis' clock is at most time.time() + clock_ahead.
    clock_ahead: float | None = None


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@cache
def _script():
    return redis_client().register_script(_RESERVE)


@cache
def _log_script():
    return redis_client().register_script(_LOG)


@cache
def _room_script():
    return redis_client().register_script(_ROOM)


@cache
def _started_script():
    return redis_client().register_script(_STARTED)


def bucket_key(sender_id: int) -> str:
    return f"pace:sender:{sender_id}"


def log_key(sender_id: int) -> str:
    return f"pace:log:sender:{sender_id}"


def slot_reserve(sender_id: int, mps: float, *, max_ahead: float = MAX_AHEAD, count: int = 1) -> Slot:
    """Reserve the sender's next slot if it is at most ``max_ahead`` seconds away.

    ``count`` > 1 (evenly spaced senders only) reserves that many sends at once: one Redis call
    per chunk for a sender far above what one call per send could serve.
    """
    ahead_us = int(max_ahead * 1_000_000)
    if mps <= LOG_MAX_MPS:
        args = [max(1, int(mps)), int(WINDOW * 1_000_000), ahead_us]
        keys = [log_key(sender_id), log_key(sender_id) + ":seq"]
        asked = time.time()
        granted, wait_us, at_us, slot_id = _log_script()(keys=keys, args=args)
        ahead = (int(at_us) - int(wait_us)) / 1_000_000 - asked if granted else None
        return Slot(bool(granted), int(wait_us) / 1_000_000, int(at_us), int(slot_id), ahead)
    interval_us = max(1, int(1_000_000 * MARGIN / mps)) * max(1, count)
    granted, wait_us, at_us = _script()(keys=[bucket_key(sender_id)], args=[interval_us, ahead_us])
    return Slot(bool(granted), int(wait_us) / 1_000_000, int(at_us))


def slot_started(sender_id: int, slot: Slot) -> float | None:
    """Call once the request of ``slot`` has been written: its slot moves to now if it left late past TOLERANCE.

    Returns how late (seconds, negative: early) the request left against its slot. Most requests
    leave on time: their slot keeps its time without a call to Redis, the clocks' difference known
    from the reservation (over-estimated by the reservation's round trip, so a lateness in doubt is
    asked about). A request that left early keeps its later slot: the sends a window on wait a
    little longer than needed, never less.
    """
    if not slot.slot_id:
        return None
    if slot.clock_ahead is not None:
        late = time.time() + slot.clock_ahead - slot.at_us / 1_000_000  # at least the true lateness
        if late <= TOLERANCE:  # the slot may keep its time: no call to Redis
            return late
    now_us = _started_script()(keys=[log_key(sender_id)], args=[slot.slot_id, int(TOLERANCE * 1_000_000)])
    return (int(now_us) - slot.at_us) / 1_000_000


def room(sender_id: int, mps: float) -> tuple[int, float]:
    """(sends the sender may start now, seconds until it may start one if none); it reserves nothing.

    A caller serving several senders asks before it claims a sender's messages, so it never waits
    on a sender whose second is full while others have room. Above ``LOG_MAX_MPS``: always room.
    """
    if mps <= 0 or mps > LOG_MAX_MPS:
        return sys.maxsize, 0.0
    free, wait_us = _room_script()(keys=[log_key(sender_id)], args=[max(1, int(mps)), int(WINDOW * 1_000_000)])
    return int(free), int(wait_us) / 1_000_000


def chunk_for(mps: float) -> int:
    """Sends one Redis call may reserve: one in the exact log, ~10 ms worth above it."""
    return 1 if mps <= LOG_MAX_MPS else min(100, int(mps // 100))


def slot_take(
    sender_id: int,
    mps: float,
    *,
    keep_going: Callable[[], bool] = lambda: True,
    count: int = 1,
    idle: Callable[[float], None] | None = None,
    lead: float = 0.0,
) -> Slot | None:
    """Block until this caller owns a slot and its time has come; None if ``keep_going`` says stop.

    ``mps`` <= 0 means unthrottled. ``keep_going`` is asked while waiting, so a pause stops a
    worker that is queueing for a busy sender. ``idle(seconds)`` is told how long the caller is
    about to wait, and may use it for other work (recording answers); the wait then only sleeps
    what is left. ``lead`` (at most ``MAX_LEAD``) returns that much before the slot's time: what
    the caller usually loses between here and its request leaving.
    """
    if mps <= 0:
        return Slot(True, 0.0, 0)
    while True:
        slot = slot_reserve(sender_id, mps, count=count)
        wait = slot.wait - min(max(lead, 0.0), MAX_LEAD) if slot.granted else min(slot.wait, 0.25)
        if wait > 0 and idle is not None:
            began = time.monotonic()
            idle(wait)
            wait -= time.monotonic() - began
        if wait > 0:
            time.sleep(wait)
        if slot.granted:
            return slot
        if not keep_going():
            return None


def pacing_reset(sender_id: int) -> None:
    redis_client().delete(bucket_key(sender_id), log_key(sender_id), log_key(sender_id) + ":seq")


def pacer(sender_id: int, mps: int, keep_going: Callable[[], bool] = lambda: True):
    """A ``pace(idle)`` callable for the send pipeline: blocks for the sender's next slot; False means stop.

    It returns a callable the sender thread calls once the request has been written: a send that
    left late moves its slot in the sender's log, so the window stays exact at the provider.
    ``idle`` runs while it waits (the pipeline records answers then); ``keep_going`` is asked while
    it waits (a paused run).

    While Redis is unreachable (a restart) it waits and asks again, with capped backoff, as long
    as ``keep_going`` allows; past REDIS_DOWN_GIVE_UP it gives up, and the batch gives its claims back.
    """

    lead = [0.0]  # how late requests usually leave against their slot (a moving mean)

    def started(slot: Slot) -> None:
        try:
            late = slot_started(sender_id, slot)
        except redis.RedisError:  # the slot keeps its time; the slack covers most lateness
            return
        if late is not None:  # hand over earlier while requests leave late, later while they leave early
            lead[0] = min(max(lead[0] + LEAD_WEIGHT * late, 0.0), MAX_LEAD)

    chunk = chunk_for(mps)
    stock = [0]  # sends left in the last chunk taken (senders above the exact log's range)

    def pace(idle=None):
        if stock[0] > 0:
            stock[0] -= 1
            return True
        delay, waited = 0.1, 0.0
        while True:
            try:
                slot = slot_take(sender_id, mps, keep_going=keep_going, count=chunk, idle=idle, lead=lead[0])
                if slot is not None:
                    stock[0] = chunk - 1
                return False if slot is None else functools.partial(started, slot)
            except redis.RedisError as exc:
                if waited >= REDIS_DOWN_GIVE_UP or not keep_going():
                    logger.warning("pacing unavailable for sender %s, giving the batch back: %s", sender_id, exc)
                    return False
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)

    return pace
