"""A run's dispatcher places in Redis: each dispatcher holds one (``chain``) while it sends.

A place is a key with a token and a TTL (``CHAIN_TTL``), refreshed by each batch: a dispatcher
that died frees its place within the TTL, and ``dispatch.dispatch_start`` fills it again. Without
Redis every claim succeeds: a second dispatcher is harmless (claims skip locked rows).
"""

from __future__ import annotations

import uuid

import redis

from messaging import pacing

CHAIN_TTL = 15  # seconds a dispatcher's place lasts without a batch


def _chain_key(run_id: int, chain: int) -> str:
    return f"dispatch:run:{run_id}:chain:{chain}"


def chain_claim(run_id: int, chain: int) -> str | None:
    """Take the run's dispatcher place ``chain`` if it is free; returns the holder's token."""
    token = uuid.uuid4().hex
    try:
        taken = pacing.redis_client().set(_chain_key(run_id, chain), token, nx=True, ex=CHAIN_TTL)
    except redis.RedisError:
        return token  # nothing can tell without Redis; a second dispatcher is harmless (claims skip locked rows)
    return token if taken else None


# KEYS[1] the place; ARGV: token, ttl. Refreshed while it is this token's (or free: taken again).
_CHAIN_KEEP = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""
_CHAIN_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def chain_keep(run_id: int, chain: int, token: str) -> bool:
    """Refresh the place; False when another dispatcher holds it now (this one should stop)."""
    try:
        return bool(pacing.redis_client().eval(_CHAIN_KEEP, 1, _chain_key(run_id, chain), token, CHAIN_TTL))
    except redis.RedisError:
        return True


def chain_release(run_id: int, chain: int, token: str) -> None:
    """Give the place back (nothing left to send): a later start may fill it at once."""
    try:
        pacing.redis_client().eval(_CHAIN_RELEASE, 1, _chain_key(run_id, chain), token)
    except redis.RedisError:
        pass
