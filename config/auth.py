"""API token authentication that does not cost a query per request.

DRF's TokenAuthentication looks the token and its user up on every request, and the role check
then reads the user's groups: two queries for each event a backend posts. Each process keeps
what it found for API_TOKEN_CACHE_SECONDS (10 by default, 0 turns it off): a deleted token, a
deactivated user or a changed role takes effect within that time; model permissions are read
afresh on every request that checks one.
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
            user_roles(user)  # the roles travel with the remembered user
            with _lock:
                if len(_entries) >= MAX_ENTRIES:
                    _entries.clear()
                _entries[key] = (now + ttl, user, token)
        return user, token


def _fresh_copy(user):
    """The remembered user for one request: its roles kept, its model-permission caches not.

    A copy, so that requests in other threads never share what a request caches on its user;
    permissions (e.g. seeing full phone numbers) are read afresh, as without the memory.
    """
    user = copy.copy(user)
    for name in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(name, None)
    return user


def token_cache_clear() -> None:
    with _lock:
        _entries.clear()
