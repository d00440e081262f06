"""Clicks benchmark: tracked links opened through gunicorn on loopback, and every click checked in the database.

    python -m bench.clicks [--requests 50000] [--links 10000]

It creates its own database (``bench_clicks`` on the DATABASE_URL server) with ``--links``
tracked links (one per message), starts gunicorn with production settings (the WSGI
application of config/wsgi.py, its ``/l/`` fast path included) and one Celery worker, which
drains the click stream when told to, once a second, as beat does every 2 s. Then, over
keep-alive connections from a few client processes (pre-built HTTP/1.1 requests):

1. ``baseline``: the same requests against a bare WSGI application answering every request with
   a fixed 302 under the same gunicorn settings: the most this machine's gunicorn and clients
   can do, for the ratio;
2. ``clicks``: ``GET /l/<code>`` over the links, in random order, a few per link; one request in
   ten is a link-preview agent or a HEAD request (answered, not counted), one in a hundred an
   unknown code (a plain 404 page).

It then drains what is left and checks the database: ``recorded`` clicks (rows and the links'
counters, which must agree), ``lost`` (counted requests without a row), ``duplicates`` (rows
beyond the requests). The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time

from bench._util import (
    BASE_DIR,
    database_recreate,
    free_port,
    machine_busy_seconds,
    postgres_backends_cpu,
    process_tree_cpu,
    server_url,
)
from bench.events import fire
from bench.send import workers_start, workers_wait_ready
from bench.webhooks import server_env

BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
PREVIEW = "WhatsApp/2.24.6.77 A"


def hello(environ, start_response):
    """The baseline: what gunicorn and the clients cost with nothing behind the URL."""
    start_response("302 Found", [("Location", "https://shop.example.com/"), ("Content-Length", "0")])
    return [b""]


def links_fill(links: int) -> list[str]:
    """``links`` messages with one tracked link each; returns their codes."""
    from django.db import connection

    from messaging.links.codes import link_code

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO messaging_message (direction, channel, to_address, from_address, body, body_source, status,
                content_variables, render_context, num_media, media, skip_reason, error_code, error_message,
                price_unit, encoding, content_sid, request_hash, attempts, created_at, updated_at)
            SELECT 'outbound', 'sms', '+2547' || lpad(i::text, 8, '0'), '+15005550006', 'bench', '', 'delivered',
                '{}'::jsonb, '{}'::jsonb, 0, '[]'::jsonb, '', '', '', '', '', '', '', 1, now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [links],
        )
        cursor.execute(
            """
            INSERT INTO messaging_link (message_id, position, url, expires_at, clicks)
            SELECT id, 0, 'https://shop.example.com/spring?utm_source=sms&m=' || id, now() + interval '90 days', 0
            FROM messaging_message
            RETURNING message_id
            """
        )
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute("ANALYZE")
    return [link_code(message_id, 0) for message_id in ids]


def plan(codes: list[str], requests: int, seed: int) -> tuple[list[bytes], int, int]:
    """The requests, with how many are counted clicks and how many unknown codes."""
    rng = random.Random(seed)
    built, counted, unknown = [], 0, 0
    for _ in range(requests):
        roll = rng.random()
        method, agent, code = "GET", BROWSER, rng.choice(codes)
        if roll < 0.01:
            code, unknown = "zz" + secrets.token_hex(5), unknown + 1
        elif roll < 0.06:
            agent = PREVIEW
        elif roll < 0.11:
            method = "HEAD"
        else:
            counted += 1
        built.append(f"{method} /l/{code} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\n\r\n".encode())
    return built, counted, unknown


def gunicorn(app: str, port: int, env: dict[str, str], args) -> subprocess.Popen:
    command = [sys.executable, "-m", "gunicorn", app, "-w", str(args.workers), "-k", "gthread"]
    command += ["--threads", str(args.threads), "--keep-alive", "30"]
    command += ["--bind", f"127.0.0.1:{port}", "--backlog", "2048", "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=BASE_DIR, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit("gunicorn exited at start") from None
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("gunicorn did not start within 30 s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)


class Beat(threading.Thread):
    """Sends the drain task once a second, as celery-beat would."""

    def __init__(self, app) -> None:
        super().__init__(daemon=True)
        self.app, self.halt = app, threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            self.app.send_task("messaging.clicks_drain")


def drained_wait(app, timeout: float = 120.0) -> float:
    """Until the stream holds nothing, nothing is pending, and the counters stopped moving."""
    from config.observe import redis_client
    from messaging.links.clicks import GROUP
    from messaging.links.follow import STREAM

    client, began = redis_client(), time.monotonic()
    while time.monotonic() - began < timeout:
        app.send_task("messaging.clicks_drain")
        time.sleep(1.0)
        if client.xlen(STREAM) == 0 and client.xpending(STREAM, GROUP)["pending"] == 0:
            return time.monotonic() - began
    raise SystemExit("clicks still in the stream after the timeout")


def database_check(counted: int) -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT key) FROM messaging_linkclick")
        rows, keys = cursor.fetchone()
        cursor.execute("SELECT coalesce(sum(clicks), 0), count(*) FILTER (WHERE clicks > 0) FROM messaging_link")
        counters, clicked_links = cursor.fetchone()
    return {
        "recorded": rows,
        "counters": int(counters),
        "distinct_keys": keys,
        "clicked_links": clicked_links,
        "lost": max(0, counted - rows),
        "duplicates": max(0, rows - counted),
    }


def _cpu(server: subprocess.Popen, workers: list[subprocess.Popen], client, database: str) -> dict[str, float]:
    info = client.info("cpu")
    return {
        "machine": machine_busy_seconds(),
        "gunicorn": process_tree_cpu(server.pid),
        "celery": sum(process_tree_cpu(worker.pid) for worker in workers),
        "redis": info["used_cpu_sys"] + info["used_cpu_user"],
        "postgres": postgres_backends_cpu(database),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--links", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument("--database", default="bench_clicks")
    parser.add_argument("--seed", type=int, default=25)
    args = parser.parse_args(argv)

    database_url = database_recreate(server_url("DATABASE_URL"), args.database)
    port = free_port()
    env = server_env(port, database_url, secrets.token_hex(16))
    env["MESSAGING_PROVIDER"] = "simulated"
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    os.environ.update({key: env[key] for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PHONE_HASH_KEY")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connections

    from config.celery import app
    from config.observe import redis_client
    from messaging.links.follow import CACHE_PREFIX, STREAM

    client = redis_client()
    client.delete(STREAM, *client.scan_iter(CACHE_PREFIX + "*"))
    codes = links_fill(args.links)
    requests, counted, unknown = plan(codes, args.requests, args.seed)
    warm = plan(codes, args.workers * args.threads * 50, args.seed + 1)
    connections.close_all()
    ok = (b"302", b"404")

    server = gunicorn("bench.clicks:hello", port, env, args)
    try:
        fire(port, requests[:2000], ok, args.connections, args.client_processes)
        baseline = fire(port, requests, ok, args.connections, args.client_processes)
    finally:
        stop(server)

    app.control.purge()
    server = gunicorn("config.wsgi", port, env, args)
    workers = workers_start(1, 2, {**env, "LOG_LEVEL": "ERROR"})
    beat = Beat(app)
    try:
        workers_wait_ready(app, 1)
        fire(port, warm[0], ok, args.connections, args.client_processes)  # warm-up clicks are checked too
        counted += warm[1]
        beat.start()
        before = _cpu(server, workers, client, args.database)
        clicks = fire(port, requests, ok, args.connections, args.client_processes)
        after = _cpu(server, workers, client, args.database)
        cpu = {key: round(after[key] - before[key], 1) for key in before}
        beat.halt.set()
        drained_s = drained_wait(app)
    finally:
        beat.halt.set()
        stop(server)
        for worker in workers:
            stop(worker)

    check = database_check(counted)
    for name, phase in (("baseline", baseline), ("clicks", clicks)):
        print(
            f"{name}: {phase['requests']} requests in {phase['elapsed_s']:.1f} s = {phase['rps']:.0f}/s, "
            f"p50 {phase['p50_ms']:.2f} ms, p99 {phase['p99_ms']:.2f} ms, {phase['errors']} unexpected answers"
        )
    print(f"drained {drained_s:.1f} s after the last request; {json.dumps(check)}")
    print(
        json.dumps(
            {
                "bench": "clicks",
                "rps": round(clicks["rps"]),
                "p50_ms": round(clicks["p50_ms"], 2),
                "p99_ms": round(clicks["p99_ms"], 2),
                "recorded": check["recorded"],
                "lost": check["lost"],
                "duplicates": check["duplicates"],
                "counters_agree": check["counters"] == check["recorded"],
                "unexpected_answers": clicks["errors"],
                "baseline_rps": round(baseline["rps"]),
                "baseline_p99_ms": round(baseline["p99_ms"], 2),
                "ratio_to_baseline": round(clicks["rps"] / baseline["rps"], 2),
                "drained_after_s": round(drained_s, 1),
                "conditions": {
                    "requests": args.requests,
                    "counted_requests": counted,
                    "preview_or_head": args.requests - (counted - warm[1]) - unknown,
                    "unknown_codes": unknown,
                    "links": args.links,
                    "gunicorn": f"{args.workers} gthread workers x {args.threads} threads, keep-alive",
                    "clients": f"{args.connections} keep-alive connections in {args.client_processes} processes",
                    "drain": "1 Celery worker, the drain task sent every second",
                    "cores": os.cpu_count(),
                    "cores_busy": round(cpu["machine"] / clicks["elapsed_s"], 2),
                    "client_cpu_s": round(clicks["client_cpu_s"], 1),
                    "cpu_s": cpu,
                    "debug": False,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
