"""Django's DATABASES entry from DATABASE_URL and the pooler in front of PostgreSQL (settings.py reads the env)."""

from __future__ import annotations

from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import Env


def database_settings(url: str, env: Env, *, pooler: str, prepared_statements: bool) -> dict[str, Any]:
    """pgbouncer: a client's statements may reach a different server connection in each transaction,
    so nothing may outlive one (no server-side prepared statements, no WITH HOLD cursors);
    django: the pool keeps the connections instead of one per thread kept for DB_CONN_MAX_AGE.
    """
    database = dj_database_url.parse(url, conn_max_age=env.int("DB_CONN_MAX_AGE", 600, minimum=0))
    if database["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_URL must name a PostgreSQL database; SQLite and others are not supported")
    database["CONN_HEALTH_CHECKS"] = True
    database.setdefault("OPTIONS", {})
    database["OPTIONS"].setdefault("connect_timeout", 5)
    database["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}
    if not prepared_statements:
        database["OPTIONS"]["prepare_threshold"] = None  # psycopg never prepares on its own
    if pooler == "pgbouncer":
        database["DISABLE_SERVER_SIDE_CURSORS"] = True  # .iterator() fetches in chunks from a client-side cursor
    elif pooler == "django":
        database["CONN_MAX_AGE"] = 0  # the pool keeps the connections (Django refuses both)
        database["OPTIONS"]["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", 2, minimum=0),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", 10, minimum=1),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", 10.0, minimum=0.1),
        }
        if database["OPTIONS"]["pool"]["min_size"] > database["OPTIONS"]["pool"]["max_size"]:
            raise ImproperlyConfigured("DATABASE_POOL_MIN_SIZE cannot be above DATABASE_POOL_MAX_SIZE")
    return database
