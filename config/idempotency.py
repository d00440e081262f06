"""Idempotency keys: one contract for every endpoint that takes an ``Idempotency-Key`` header.

The first request with a key stores what it created together with the hash of its body
(``request_fingerprint``). A replay with the same key and the same body answers with the first
result and does nothing new; the same key with another body is refused (``IdempotencyConflict``,
a 422 naming the header), also when the two requests race: the unique key decides which insert
wins, and the loser compares the hashes as a replay would. Services raise the conflict, so every
door gets the same answer; ``config.api`` reads the header and maps the conflict to 422.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.core.exceptions import ValidationError

HEADER = "Idempotency-Key"
MAX_LENGTH = 255  # the unique columns holding keys are varchar(255)


def request_fingerprint(data: Any) -> str:
    """A stable hash of a request body (key order does not matter), to tell a replay from another request."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class IdempotencyConflict(ValidationError):
    """The idempotency key was used before with a different request."""

    def __init__(self, first: str):
        super().__init__({HEADER: [f"this key was used for a different request ({first}); use a new key"]})


def replay_check(stored_hash: str, request_hash: str, first: str) -> None:
    """Refuse a replay whose body differs from the first request's; ``first`` names what it created.

    A row stored without a hash (by a door with no request body, or before hashes were kept)
    cannot be compared and is replayed.
    """
    if stored_hash and request_hash and stored_hash != request_hash:
        raise IdempotencyConflict(first)
