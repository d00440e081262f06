"""GET /health/: is the database, the broker and the cache reachable?

Anyone (a load balancer, Docker) learns ok or down from the status code and
``status``; which part failed and why (error texts name hosts, ports and
database roles) is shown only to Staff, by session or API token, and logged.
"""

from __future__ import annotations

import logging
import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection
from redis.exceptions import RedisError
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from config.roles import is_staff_member

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def check_cache() -> None:
    key = f"health:{uuid.uuid4().hex}"
    cache.set(key, "ok", timeout=10)
    if cache.get(key) != "ok":
        raise RuntimeError("value written was not read back")
    cache.delete(key)


CHECKS = {"database": check_database, "broker": check_broker, "cache": check_cache}


def _caller_is_staff(request) -> bool:
    """A Staff session or Staff token; a bad token, or a database that cannot say, means no."""
    try:
        user = request.user
        if not user.is_authenticated:
            found = TokenAuthentication().authenticate(request)
            user = found[0] if found else user
        return is_staff_member(user)
    except (AuthenticationFailed, DatabaseError, RedisError):
        return False


@never_cache
@require_GET
def health(request):
    results = {}
    failed = []
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure of a dependency means "down"
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
            failed.append(name)
            logger.warning("health check %s failed: %s", name, results[name]["error"])
        else:
            results[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    status = 503 if failed else 200
    body = {"status": "ok" if not failed else "down"}
    if _caller_is_staff(request):
        body.update(failed=failed, checks=results)
    return JsonResponse(body, status=status)
