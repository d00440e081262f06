"""Events benchmark: a shop backend posting events (one at a time and in batches) against gunicorn on loopback.

    python -m bench.events [--contacts 100000] [--single 20000] [--batches 100] [--messages 5000]

It creates its own database (``bench_events`` on the DATABASE_URL server, or on the embedded
one) with ``--contacts`` opted-in contacts and one running triggered campaign on
``order_shipped`` with the condition ``total >= 100``, which 10 % of the events meet. It starts
gunicorn with production settings (DEBUG off, persistent connections, throttles lifted) and a
Celery worker (the matchers and the run's dispatcher, simulated provider); where the server runs
without autovacuum, the bench analyses the changed tables as autovacuum would
(``bench._util.AutovacuumStandIn``, ``conditions.autovacuum``). Then, over keep-alive
connections from a few client processes (pre-built HTTP/1.1 requests, so the clients leave the
CPU to the server):

1. ``baseline``: single events answered before returning (``POST /api/v1/events/``, the
   default, matching in the request) - the door as it was;
2. ``single``: single events stored first (``POST /api/v1/events/?wait=false``), 5 % of them
   replays of an earlier key;
3. ``batch``: ``POST /api/v1/events/batch`` with 1,000 events each, 2 % replays;
4. ``messages_busy``: transactional ``POST /api/v1/messages/`` (a template to one contact) while
   the worker still sends the batches' answers;
5. ``messages``: the same once every send is done.

Then it waits for the matchers and checks the database: each event meeting the condition has
exactly one recipient with a queued message (``duplicates``: extra ones, ``lost``: missing
ones, replays included), none other has any; ``match_lag_p99_s`` is from an event's
acceptance to its message's creation. The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import secrets
import selectors
import socket
import subprocess
import sys
import time
import uuid

from bench._util import (
    BASE_DIR,
    AutovacuumStandIn,
    database_recreate,
    free_port,
    machine_busy_seconds,
    machine_interrupt_seconds,
    percentile,
    postgres_backends_cpu,
    process_tree_cpu,
    redis_server_cpu,
    server_url,
)
from bench.send import contacts_fill, workers_start, workers_wait_ready
from bench.webhooks import _content_length, gunicorn_start, server_env

MATCH_SHARE = 0.10
SINGLE_REPLAYS = 0.05
BATCH_REPLAYS = 0.02
BATCH_SIZE = 1000


class Connection:
    """One keep-alive client connection sending its pre-built requests one after the other."""

    def __init__(self, port: int, requests: list[bytes], ok: tuple[bytes, ...]) -> None:
        self.port, self.requests, self.ok, self.index = port, requests, ok, 0
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.sent_at = 0.0
        self.latencies: list[float] = []
        self.errors = self.reconnects = 0
        self.bodies: list[bytes] = []

    @property
    def done(self) -> bool:
        return self.index >= len(self.requests)

    def send(self, selector: selectors.BaseSelector) -> None:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            selector.register(self.sock, selectors.EVENT_READ, self)
            self.reconnects += 1
        self.buffer = b""
        self.sent_at = time.perf_counter()
        self.sock.sendall(self.requests[self.index])

    def receive(self, selector: selectors.BaseSelector) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:  # closed before answering (an idle keep-alive timeout): send it again, it is idempotent
            self.close(selector)
            self.send(selector)
            return
        self.buffer += chunk
        head, found, body = self.buffer.partition(b"\r\n\r\n")
        if not found or len(body) < _content_length(head.lower()):
            return
        self.latencies.append(time.perf_counter() - self.sent_at)
        if head[9:12] not in self.ok:
            self.errors += 1
            if self.errors <= 3:
                print("unexpected answer:", self.buffer[:600], file=sys.stderr)
        self.bodies.append(body)
        if b"connection: close" in head.lower():
            self.close(selector)
        self.index += 1
        if self.done:
            self.close(selector)
        else:
            self.send(selector)

    def close(self, selector: selectors.BaseSelector) -> None:
        if self.sock is not None:
            selector.unregister(self.sock)
            self.sock.close()
            self.sock = None


def client_run(port: int, shares: list[list[bytes]], ok: tuple[bytes, ...], start_at: float, keep: bool) -> dict:
    """One client process: one connection per share, each sending its requests in turn."""
    connections = [Connection(port, share, ok) for share in shares]
    selector = selectors.DefaultSelector()
    time.sleep(max(0.0, start_at - time.time()))
    began, cpu = time.time(), time.process_time()
    for connection in connections:
        if not connection.done:
            connection.send(selector)
    while any(not connection.done for connection in connections):
        ready = selector.select(timeout=60)
        if not ready:
            raise TimeoutError("no answer from the server for 60 s")
        for key, _ in ready:
            key.data.receive(selector)
    ended, cpu = time.time(), time.process_time() - cpu
    return {
        "latencies": [value for connection in connections for value in connection.latencies],
        "errors": sum(connection.errors for connection in connections),
        "reconnects": sum(connection.reconnects for connection in connections),
        "bodies": [body for connection in connections for body in connection.bodies] if keep else [],
        "began": began,
        "ended": ended,
        "cpu": cpu,
    }


def fire(port: int, requests: list[bytes], ok: tuple[bytes, ...], connections: int, processes: int, keep=False):
    """Send the requests over ``connections`` keep-alive connections spread over ``processes`` processes."""
    shares = [requests[index::connections] for index in range(connections)]
    processes = min(processes, connections)
    groups = [shares[index::processes] for index in range(processes)]
    start_at = time.time() + 3.0  # spawned (not forked: this process has the Celery client's threads)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(client_run, [(port, group, ok, start_at, keep) for group in groups])
        pool.close()
        pool.join()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    latencies = sorted(value for result in results for value in result["latencies"])
    elapsed = max(result["ended"] for result in results) - min(result["began"] for result in results)
    return {
        "requests": len(requests),
        "elapsed_s": elapsed,
        "rps": len(requests) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": sum(result["errors"] for result in results),
        "connections_opened": sum(result["reconnects"] for result in results),
        "client_cpu_s": sum(result["cpu"] for result in results),
        # The client processes' whole lives, their start (a Python importing the bench) included:
        # before the first request, but within the phase's CPU accounts.
        "client_processes_cpu_s": (children_after.ru_utime + children_after.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
        "bodies": [body for result in results for body in result["bodies"]],
    }


def http_request(port: int, path: str, token: str, body: dict, key: str | None = None) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    )
    if key:
        head += f"Idempotency-Key: {key}\r\n"
    return (head + "\r\n").encode() + data


class Plan:
    """The events to send: (key, body) with ``matching`` the keys that must fire the campaign."""

    def __init__(self, contacts: int, seed: int) -> None:
        self.random = random.Random(seed)
        self.contacts = contacts
        self.matching: set[str] = set()
        self.sent: list[tuple[str, dict]] = []  # first sends, replayable

    def event(self) -> tuple[str, dict]:
        key = uuid.UUID(int=self.random.getrandbits(128)).hex
        matches = self.random.random() < MATCH_SHARE
        body = {
            "contact": self.random.randint(1, self.contacts),
            "name": "order_shipped",
            "properties": {"order_id": key[:8], "total": 150 if matches else 5},
        }
        if matches:
            self.matching.add(key)
        self.sent.append((key, body))
        return key, body

    def replay_or_event(self, share: float) -> tuple[str, dict]:
        if self.sent and self.random.random() < share:
            return self.random.choice(self.sent)
        return self.event()


def setup(contacts: int) -> tuple[str, int, int, int]:
    """Contacts, a sender, templates, the triggered campaign (launched) and a Staff token."""
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from campaigns import services
    from config.roles import STAFF
    from messaging.models import MessageTemplate, Sender

    with connection.cursor() as cursor:
        contacts_fill(cursor, contacts)
        cursor.execute("ANALYZE")
    sender = Sender.objects.create(
        name="sms", channel="sms", kind="long_code", provider="simulated", from_address="+15005550006", mps=1000
    )
    shipped = MessageTemplate.objects.create(name="shipped", channel="sms", body="Order {{ event.order_id }} shipped")
    otp = MessageTemplate.objects.create(name="otp", channel="sms", body="Your code, {{ name }}: 123456")
    campaign = services.campaign_create(
        name="Big order shipped",
        kind="triggered",
        template=shipped,
        sender=sender,
        trigger_event="order_shipped",
        trigger_conditions=[{"property": "total", "op": "gte", "value": 100}],
    )
    services.campaign_launch(campaign)
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("backend", password=secrets.token_urlsafe(16))
    user.groups.add(Group.objects.get(name=STAFF))
    token = Token.objects.create(user=user)
    return token.key, campaign.pk, otp.pk, sender.pk


def matchers_wait(timeout: float = 300.0) -> float:
    from campaigns.models import Event

    began = time.monotonic()
    while Event.objects.filter(status="pending").exists():
        if time.monotonic() - began > timeout:
            raise SystemExit("events still pending after the matchers' timeout")
        time.sleep(0.2)
    return time.monotonic() - began


def sends_wait(timeout: float = 120.0) -> tuple[float, int]:
    """Wait until no message is waiting for its send or its provider's answer; (seconds, how many still were)."""
    from messaging.models import Message

    began = time.monotonic()
    waiting = Message.objects.filter(status__in=("pending", "sending", "queued"))
    while (left := waiting.count()) and time.monotonic() - began < timeout:
        time.sleep(0.2)
    return time.monotonic() - began, left


def database_check(plan: Plan, campaign_id: int) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT e.idempotency_key, count(r.id), min(m.created_at - e.received_at)
               FROM campaigns_event e
               LEFT JOIN campaigns_recipient r ON r.event_id = e.id
               LEFT JOIN messaging_message m ON m.id = r.message_id
               GROUP BY e.id"""
        )
        rows = cursor.fetchall()
        cursor.execute("SELECT count(*) FROM campaigns_event WHERE status <> 'matched'")
        unmatched = cursor.fetchone()[0]
        cursor.execute(
            "SELECT total, pending + held + sending + sent, skipped, failed FROM campaigns_campaignrun "
            "WHERE campaign_id = %s",
            [campaign_id],
        )
        run_total, run_queued, run_skipped, run_failed = cursor.fetchone()
    answers = {key: (count, lag) for key, count, lag in rows}
    expected = plan.matching
    duplicates = sum(max(0, count - 1) for count, _ in answers.values())
    lost = sum(1 for key in expected if answers.get(key, (0, None))[0] == 0)
    stray = sum(count for key, (count, _) in answers.items() if key not in expected)
    lags = sorted(lag.total_seconds() for key, (count, lag) in answers.items() if key in expected and lag is not None)
    return {
        "events_stored": len(answers),
        "events_sent_distinct": len({key for key, _ in plan.sent}),
        "unmatched": unmatched,
        "matched": sum(1 for key in expected if answers.get(key, (0, None))[0] >= 1),
        "expected_matches": len(expected),
        "triggered": sum(count for count, _ in answers.values()),
        "duplicates": duplicates,
        "lost": lost,
        "stray": stray,
        "run_counters": {
            "total": run_total,
            "queued_or_sent": run_queued,
            "skipped": run_skipped,
            "failed": run_failed,
        },
        "match_lag_p50_s": round(percentile(lags, 0.50), 3),
        "match_lag_p99_s": round(percentile(lags, 0.99), 3),
        "match_lag_max_s": round(lags[-1], 3) if lags else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=2_000, help="single events answered before returning")
    parser.add_argument("--single", type=int, default=20_000, help="single events stored first")
    parser.add_argument("--batches", type=int, default=100, help=f"batches of {BATCH_SIZE} events")
    parser.add_argument("--messages", type=int, default=5_000, help="transactional messages")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--threads", type=int, default=2, help="threads per gthread worker")
    parser.add_argument("--celery-concurrency", type=int, default=4)
    parser.add_argument("--database", default="bench_events")
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args(argv)

    database_url = database_recreate(server_url("DATABASE_URL"), args.database)
    port = args.port = free_port()
    env = server_env(port, database_url, secrets.token_hex(16))
    env.update(
        {
            "API_THROTTLE_WRITE_RATE": "100000000/min",
            "API_THROTTLE_READ_RATE": "100000000/min",
            "MESSAGING_PROVIDER": "simulated",
        }
    )
    # Throttles are lifted, whatever scopes the settings have (names of scopes to come included).
    scopes = ("READ", "WRITE", "EVENTS", "EVENT", "MESSAGES", "TRANSACTIONAL", "IMPORTS", "IMPORT")
    env.update({f"API_THROTTLE_{scope}_RATE": "100000000/min" for scope in scopes})
    env.update({key: "100000000/min" for key in os.environ if key.startswith("API_THROTTLE_") and key.endswith("RATE")})
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    os.environ.update({key: env[key] for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PHONE_HASH_KEY")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connections

    from config.celery import app

    token, campaign_id, otp_id, sender_id = setup(args.contacts)
    plan = Plan(args.contacts, args.seed)
    baseline = []
    for _ in range(args.baseline):
        key, body = plan.event()
        baseline.append(http_request(port, "/api/v1/events/", token, body, key))
    single = []
    for _ in range(args.single):
        key, body = plan.replay_or_event(SINGLE_REPLAYS)
        single.append(http_request(port, "/api/v1/events/?wait=false", token, body, key))
    batches = []
    for _ in range(args.batches):
        items = [dict(body, idempotency_key=key) for key, body in map(_of(plan), range(BATCH_SIZE))]
        batches.append(http_request(port, "/api/v1/events/batch", token, {"events": items}))
    rng = random.Random(args.seed + 1)
    messages_busy, messages = (
        [
            http_request(
                port,
                "/api/v1/messages/",
                token,
                {"contact": rng.randint(1, args.contacts), "template": otp_id, "sender": sender_id},
                uuid.uuid4().hex,
            )
            for _ in range(args.messages)
        ]
        for _ in range(2)
    )
    connections.close_all()

    app.control.purge()  # tasks a previous run left in the queue name rows this database no longer has
    autovacuum = AutovacuumStandIn(database_url).start()
    server = gunicorn_start_threads(port, env, args)
    workers = workers_start(1, args.celery_concurrency, {**env, "LOG_LEVEL": "ERROR"})
    try:
        workers_wait_ready(app, 1)
        warm = [http_request(port, "/api/v1/events/?wait=false", token, body, key) for key, body in _warm(args)]
        fire(port, warm, (b"202",), args.connections, args.client_processes)
        phases = {}
        cpu_before, wall_before = _cpu(server.pid, workers, args.database), time.monotonic()
        phases["baseline"] = _fire_measured(server, workers, args, baseline, (b"201",), args.connections)
        matchers_wait()
        phases["single"] = _fire_measured(server, workers, args, single, (b"202",), args.connections)
        phases["batch"] = _fire_measured(server, workers, args, batches, (b"200",), args.batch_connections, keep=True)
        drained_s = matchers_wait()
        # Transactional messages while the worker still sends the batches' answers, then alone.
        phases["messages_busy"] = _fire_measured(
            server, workers, args, messages_busy, (b"201", b"202"), args.connections
        )
        sends_drained_s, sends_left = sends_wait()
        phases["messages"] = _fire_measured(server, workers, args, messages, (b"201", b"202"), args.connections)
        cpu_after, wall = _cpu(server.pid, workers, args.database), time.monotonic() - wall_before
    finally:
        server.terminate()
        for worker in workers:
            worker.terminate()
        server.wait(timeout=30)
        for worker in workers:
            worker.wait(timeout=60)
        autovacuum.stop()

    batch_results = [json.loads(body) for body in phases["batch"].pop("bodies")]
    batch_errors = sum(result["errors"] for result in batch_results)
    check = database_check(plan, campaign_id)
    cpu = {key: round(cpu_after[key] - cpu_before[key], 1) for key in cpu_before}
    ours = (
        cpu["gunicorn"]
        + cpu["celery"]
        + cpu["postgres"]
        + cpu["redis"]
        + cpu["kernel_interrupts"]
        + cpu["bench"]
        + sum(phase["client_processes_cpu_s"] for phase in phases.values())
    )
    for name, phase in phases.items():
        phase.pop("bodies", None)
        print(
            f"{name}: {phase['requests']} requests in {phase['elapsed_s']:.1f} s = {phase['rps']:.0f}/s, "
            f"p50 {phase['p50_ms']:.1f} ms, p99 {phase['p99_ms']:.1f} ms, {phase['errors']} unexpected answers, "
            f"{phase['connections_opened']} connections, clients {phase['client_cpu_s']:.1f} CPU s, "
            f"CPU ms per request: gunicorn {phase['gunicorn_cpu_ms_per_request']:.2f}, "
            f"postgres {phase['postgres_cpu_ms_per_request']:.2f}, celery {phase['celery_cpu_ms_per_request']:.2f}, "
            f"redis {phase['redis_cpu_ms_per_request']:.2f}"
        )
    print(
        f"matchers drained {drained_s:.1f} s after the last batch, sends {sends_drained_s:.1f} s after "
        f"messages_busy ({sends_left} left); CPU s during the phases: {cpu}"
    )
    print(json.dumps({"check": check, "phases": {k: _round(v) for k, v in phases.items()}}))
    summary = {
        "bench": "events",
        "single_rps": round(phases["single"]["rps"]),
        "single_p50_ms": round(phases["single"]["p50_ms"], 1),
        "single_p99_ms": round(phases["single"]["p99_ms"], 1),
        "batch_events_per_s": round(phases["batch"]["rps"] * BATCH_SIZE),
        "batch_p99_ms": round(phases["batch"]["p99_ms"], 1),
        "matched": check["matched"],
        "expected_matches": check["expected_matches"],
        "triggered": check["triggered"],
        "duplicates": check["duplicates"],
        "lost": check["lost"] + check["unmatched"] + check["stray"],
        "match_lag_p99_s": check["match_lag_p99_s"],
        "messages_rps": round(phases["messages"]["rps"]),
        "messages_p99_ms": round(phases["messages"]["p99_ms"], 1),
        "messages_busy_rps": round(phases["messages_busy"]["rps"]),
        "messages_busy_p99_ms": round(phases["messages_busy"]["p99_ms"], 1),
        "baseline_single_wait_rps": round(phases["baseline"]["rps"]),
        "baseline_single_wait_p99_ms": round(phases["baseline"]["p99_ms"], 1),
        # CPU milliseconds per request of the web server and of PostgreSQL (Celery's matching and
        # sending apart): what the code costs, whatever share of the machine the run got.
        "cpu_ms_per_request": {
            name: {
                "gunicorn": round(phase["gunicorn_cpu_ms_per_request"], 2),
                "postgres": round(phase["postgres_cpu_ms_per_request"], 2),
                "celery": round(phase["celery_cpu_ms_per_request"], 2),
                "redis": round(phase["redis_cpu_ms_per_request"], 2),
            }
            for name, phase in phases.items()
        },
        "unexpected_answers": sum(phase["errors"] for phase in phases.values()),
        "batch_event_errors": batch_errors,
        "conditions": {
            "contacts": args.contacts,
            "match_share": MATCH_SHARE,
            "single_replay_share": SINGLE_REPLAYS,
            "batch_replay_share": BATCH_REPLAYS,
            "batch_size": BATCH_SIZE,
            "requests": {name: phase["requests"] for name, phase in phases.items()},
            "gunicorn": f"{args.workers} {args.worker_class} workers x {args.threads} threads",
            "celery": f"1 worker, {args.celery_concurrency} threads (matchers, dispatcher, simulated sends)",
            "clients": f"{args.connections} keep-alive connections ({args.batch_connections} for batches) "
            f"in {args.client_processes} processes",
            "cores": os.cpu_count(),
            "cores_busy": round(cpu["machine"] / wall, 2),
            # Cores the machine was busy beyond what this run was seen to use (gunicorn, Celery,
            # PostgreSQL's backends, Redis, this process, the client processes, the kernel's
            # interrupts): other processes, PostgreSQL's writers (WAL, checkpoints), and what a
            # process that exited mid-phase used after it was last seen.
            "cores_used_by_others": round(max(0.0, cpu["machine"] - ours) / wall, 2),
            "cpu_s": cpu,
            "debug": False,
            "autovacuum": autovacuum.describe(),
            "throttles": "lifted",
            "phases": "each starts once the previous one's events are matched; messages_busy right after "
            "the batches, while the worker sends their answers; messages once every send is done",
        },
    }
    print(json.dumps(summary))


def _fire_measured(server, workers, args, requests, ok, connections, keep=False) -> dict:
    """``fire``, plus the CPU the web server and PostgreSQL spent per request during it.

    On a machine shared with other work, requests per second say how much of the machine this
    run got as much as how fast the code is; the CPU per request says the second alone.
    """
    before = _cpu(server.pid, workers, args.database)
    result = fire(
        port=args.port, requests=requests, ok=ok, connections=connections, processes=args.client_processes, keep=keep
    )
    after = _cpu(server.pid, workers, args.database)
    for name in ("gunicorn", "postgres", "celery", "redis"):
        result[f"{name}_cpu_ms_per_request"] = (after[name] - before[name]) * 1000 / len(requests)
    return result


def _of(plan: Plan):
    return lambda _: plan.replay_or_event(BATCH_REPLAYS)


def _warm(args) -> list[tuple[str, dict]]:
    return [(f"warm-{n}", {"contact": 1 + n, "name": "warm_up", "properties": {}}) for n in range(args.workers * 40)]


def _round(phase: dict) -> dict:
    return {key: round(value, 2) if isinstance(value, float) else value for key, value in phase.items()}


def _cpu(server_pid: int, workers: list[subprocess.Popen], database: str) -> dict[str, float]:
    return {
        "machine": machine_busy_seconds(),
        "kernel_interrupts": machine_interrupt_seconds(),
        "gunicorn": process_tree_cpu(server_pid),
        "celery": sum(process_tree_cpu(worker.pid) for worker in workers),
        "postgres": postgres_backends_cpu(database),
        "redis": redis_server_cpu(),
        "bench": _own_cpu(),  # this process: waiting for the matchers and the sends, starting clients
    }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def gunicorn_start_threads(port: int, env: dict[str, str], args) -> subprocess.Popen:
    if args.worker_class != "gthread":
        return gunicorn_start(port, env, args.workers, args.worker_class)
    command = [sys.executable, "-m", "gunicorn", "config.wsgi", "-w", str(args.workers), "-k", "gthread"]
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


if __name__ == "__main__":
    main()
