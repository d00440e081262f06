"""API token authentication that does not cost a query per request.

DRF's TokenAuthentication looks the token and its user up on every request, and the role check
then reads the user's groups: two queries for each event a backend posts, and two more for a
response that masks phones (the permission to see them whole). Each process keeps what it found,
the user's roles and model permissions included, for API_TOKEN_CACHE_SECONDS (10 by default, 0
turns it off): a deleted token, a deactivated user, a changed role or permission takes effect
within that time.
"""

from __future__ import annotations

import copy
import threading
import time

from django.conf import settings
from rest_framework.authentication import TokenAuthentication

from config.roles import user_roles

MAX_ENTRIES = 10_000  # distinct tokens remembered per process; past it the memory starts afresh

_entries: dict[str, tuple[float, object, object]] = {}
_lock = threading.Lock()


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        ttl = settings.API_TOKEN_CACHE_SECONDS
        now = time.monotonic()
        entry = _entries.get(key) if ttl > 0 else None
        if entry is not None and entry[0] > now:
            return _fresh_copy(entry[1]), entry[2]
        user, token = super().authenticate_credentials(key)
        if ttl > 0:
            user_roles(user)  # the roles and permissions travel with the remembered user
            user.get_all_permissions()
            with _lock:
                if len(_entries) >= MAX_ENTRIES:
                    _entries.clear()
                _entries[key] = (now + ttl, user, token)
        return user, token


def _fresh_copy(user):
    """The remembered user for one request: a copy, so that what a request sets on its user stays its own.

    The permission sets it shares with the remembered user are only read.
    """
    return copy.copy(user)


def token_cache_clear() -> None:
    with _lock:
        _entries.clear()
