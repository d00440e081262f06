"""Helpers shared by the benchmarks: their own database, free ports, percentiles."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
from psycopg import sql

BASE_DIR = Path(__file__).resolve().parent.parent


def server_url(name: str) -> str:
    """DATABASE_URL or REDIS_URL from the environment, else from the running embedded servers."""
    value = os.environ.get(name)
    if value:
        return value
    env_file = Path(os.environ.get("EMBEDDED_VAR_DIR", BASE_DIR / "var")) / "embedded.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, found = line.partition("=")
            if key.strip() == name and found.strip():
                return found.strip()
    raise SystemExit(f"{name} is not set and no embedded server runs; use `python -m config.embedded -- python -m ...`")


def production_settings() -> dict[str, str]:
    """Environment for Django's production settings: DEBUG off (no query log), throwaway secret keys."""
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "PHONE_HASH_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1",
    }


def database_url_named(url: str, database: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/" + database))


def database_recreate(url: str, database: str) -> str:
    """Drop and create ``database`` on the server of ``url``; returns its URL."""
    with psycopg.connect(database_url_named(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return database_url_named(url, database)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (Linux /proc/stat), to see who else ran."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def machine_interrupt_seconds() -> float:
    """CPU seconds the kernel has spent in interrupts and softirqs (Linux /proc/stat): on loopback,
    delivering the TCP traffic between clients, servers, PostgreSQL and Redis; no process is charged."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[5]) + int(fields[6])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its children (e.g. gunicorn and its workers)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            times = process.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


_backends_seen: dict[tuple[str, int, float], float] = {}


def redis_server_cpu() -> float:
    """CPU seconds the Redis server of REDIS_URL has used (its INFO), 0 if it cannot be asked.

    The broker, the send queue, pacing and throttles live there: on one machine it takes a share
    of the cores that would otherwise count as used by others.
    """
    import redis

    try:
        info = redis.Redis.from_url(server_url("REDIS_URL")).info("cpu")
    except redis.RedisError:
        return 0.0
    return float(info.get("used_cpu_sys", 0.0)) + float(info.get("used_cpu_user", 0.0))


def postgres_backends_cpu(database: str) -> float:
    """CPU seconds used by the local PostgreSQL backends serving ``database`` (0 if not visible).

    A backend that has exited (an autovacuum worker, a closed connection) still counts with the CPU
    it had when last seen, so a difference between two calls never goes negative; what it used
    after that is lost.
    """
    import psutil

    for process in psutil.process_iter(["cmdline", "create_time"]):
        try:
            if f" {database} " in " ".join(process.info["cmdline"] or []) + " ":
                times = process.cpu_times()
                _backends_seen[(database, process.pid, process.info["create_time"])] = times.user + times.system
        except psutil.Error:
            continue
    return sum(cpu for (name, _, _), cpu in _backends_seen.items() if name == database)


class AutovacuumStandIn:
    """ANALYZE what autovacuum would, where the server runs with autovacuum off.

    A platform's tables grow from empty, and its connections persist: a statement's cached plan
    (a prepared statement's, a PL/pgSQL function's) is made again only when an ANALYZE changes the
    statistics. With autovacuum off, a plan made over an empty table stays as the table grows; with
    it on (PostgreSQL's default), it does not. So, on a server without it, every
    ``autovacuum_naptime`` this thread analyses each table of the database changed by more than
    ``autovacuum_analyze_threshold + autovacuum_analyze_scale_factor x its rows`` since its last
    ANALYZE: autovacuum's own rule with the server's settings. With autovacuum on, it does nothing.
    """

    CHANGED_SQL = """
        SELECT s.schemaname, s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float
              + current_setting('autovacuum_analyze_scale_factor')::float * greatest(c.reltuples, 0)
        ORDER BY 1, 2
    """

    def __init__(self, database_url: str):
        self.url = database_url
        self.analysed = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autovacuum-stand-in", daemon=True)
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.server_autovacuum = conn.execute("SHOW autovacuum").fetchone()[0] == "on"
            row = conn.execute("SELECT setting::int FROM pg_settings WHERE name = 'autovacuum_naptime'").fetchone()
            self.naptime = float(row[0])

    def start(self) -> AutovacuumStandIn:
        if not self.server_autovacuum:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(self.naptime):
                self.rounds += 1
                conn.execute("SELECT pg_stat_clear_snapshot()")
                for schema, table in conn.execute(self.CHANGED_SQL).fetchall():
                    if self._stop.is_set():
                        return
                    conn.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
                    self.analysed += 1

    def describe(self) -> str:
        if self.server_autovacuum:
            return "on (the server's)"
        return (
            f"off on this server: the bench analysed as autovacuum would (every {self.naptime:.0f} s, "
            f"autovacuum's threshold): {self.analysed} tables in {self.rounds} rounds"
        )
