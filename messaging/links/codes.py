"""Short codes for a message's links: ``base62(message id * 16 + position)`` followed by a keyed tag.

The number part makes every code unique by construction (no collision to retry, no code column
to index); the tag, six base-62 characters of an HMAC keyed by SECRET_KEY, makes a code
unguessable: for a given number one guess in 62^6 (5.7e10) passes, and a wrong tag is refused
before the database is asked. A message with a million predecessors gets 11-character codes.
Rendering a message twice gives the same codes.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import cache

from django.conf import settings

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {char: value for value, char in enumerate(ALPHABET)}
MAX_LINKS = 16  # links tracked per message; further URLs are left as written
TAG_LENGTH = 6
MAX_CODE_LENGTH = 24


def _base62(number: int) -> str:
    digits = []
    while True:
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
        if not number:
            return "".join(reversed(digits))


@cache
def _key(secret: str) -> bytes:
    return hashlib.sha256(b"messaging.links:" + secret.encode()).digest()


def _tag(number: int) -> str:
    digest = hmac.new(_key(settings.SECRET_KEY), str(number).encode(), hashlib.sha256).digest()
    value = int.from_bytes(digest[:8], "big") % 62**TAG_LENGTH
    return _base62(value).rjust(TAG_LENGTH, "0")


def link_code(message_id: int, position: int) -> str:
    if not 0 <= position < MAX_LINKS:
        raise ValueError(f"a message has at most {MAX_LINKS} tracked links")
    number = message_id * MAX_LINKS + position
    return _base62(number) + _tag(number)


def code_parse(code: str) -> tuple[int, int] | None:
    """(message id, position) of a well-formed code whose tag is right; None for anything else."""
    if not TAG_LENGTH < len(code) <= MAX_CODE_LENGTH:
        return None
    number = 0
    for char in code[:-TAG_LENGTH]:
        value = _INDEX.get(char)
        if value is None:
            return None
        number = number * 62 + value
    if not hmac.compare_digest(_tag(number), code[-TAG_LENGTH:]):
        return None
    return divmod(number, MAX_LINKS)
