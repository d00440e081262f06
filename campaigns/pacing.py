"""Global per-sender pacing: one token bucket in Redis shared by every worker and process.

The bucket is a GCRA schedule (the "theoretical arrival time" of the next free slot) kept in
one Redis key per sender and moved by one Lua script, so two workers can never take the same
slot. Time comes from Redis (``TIME``), never from the workers' clocks. A caller reserves the
next slot and sleeps until it; slots are ``1 / mps`` seconds apart (with a small margin), so
no one-second window holds more than ``mps`` sends, whichever worker took them. Runs sharing
a sender share its bucket. Redis holds nothing that cannot be rebuilt: a lost key only resets
the schedule to "now".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings

# Slots a hair further apart than 1/mps: sleeps overshoot by a few ms, and a window must
# still never see mps + 1 sends when one send's sleep overshoots more than the next one's.
MARGIN = 1.02
# How far ahead a caller may reserve; beyond this it waits without reserving, so a paused
# run does not hold slots that another run on the sender could use.
MAX_AHEAD = 1.0

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
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.floor((tat + interval - now) / 1000) + 60000)
return {1, wait, tat}
"""


@dataclass(frozen=True)
class Slot:
    granted: bool
    wait: float  # seconds: until the slot (granted) or until asking again makes sense
    at_us: int  # the slot's time on Redis' clock, microseconds since the epoch


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@cache
def _script():
    return _client().register_script(_RESERVE)


def bucket_key(sender_id: int) -> str:
    return f"pace:sender:{sender_id}"


def slot_reserve(sender_id: int, mps: float, *, max_ahead: float = MAX_AHEAD) -> Slot:
    """Reserve the sender's next slot if it is at most ``max_ahead`` seconds away."""
    interval_us = int(1_000_000 * MARGIN / mps)
    granted, wait_us, at_us = _script()(keys=[bucket_key(sender_id)], args=[interval_us, int(max_ahead * 1_000_000)])
    return Slot(bool(granted), int(wait_us) / 1_000_000, int(at_us))


def slot_take(sender_id: int, mps: float, *, keep_going: Callable[[], bool] = lambda: True) -> Slot | None:
    """Block until this caller owns a slot and its time has come; None if ``keep_going`` says stop.

    ``mps`` <= 0 means unthrottled. ``keep_going`` is asked while waiting, so a pause stops a
    worker that is queueing for a busy sender.
    """
    if mps <= 0:
        return Slot(True, 0.0, 0)
    while True:
        slot = slot_reserve(sender_id, mps)
        if slot.granted:
            if slot.wait > 0:
                time.sleep(slot.wait)
            return slot
        time.sleep(min(slot.wait, 0.25))
        if not keep_going():
            return None


def pacing_reset(sender_id: int) -> None:
    _client().delete(bucket_key(sender_id))
