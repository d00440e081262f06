"""Status webhook benchmark: signed Twilio callbacks against gunicorn on loopback.

    python -m bench.webhooks --requests 20000 [--concurrency 8] [--client-processes 2] [--workers 4]
        [--campaign-share 0.5]

It creates its own database (``bench_webhooks`` on the DATABASE_URL server, or on
the embedded one), migrates it and creates the messages; starts gunicorn with
production settings (DEBUG off, persistent database connections); fires correctly
signed, form-encoded status callbacks over concurrent connections (lean HTTP/1.1 over
sockets with TCP_NODELAY, reconnecting when a sync worker closes the connection, a few
connections per client process so the clients leave the CPU to the server): a realistic
mix of progressions per message, about 10 % duplicates, a share out of order, and
2 % of messages whose sid is saved only after their callbacks arrived (applied then
by ``status_callbacks_apply_pending``, as the send service does). A share of the messages
(``--campaign-share``) are a running campaign's recipients: a status change of theirs also brings
the reporting counters up to date in the request, as a campaign's callbacks do. Then it checks the
database: every distinct (sid, status) stored once, every event applied, and every
message in the state its events call for, whatever order they came in.
The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import secrets
import selectors
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from bench._util import (
    BASE_DIR,
    database_recreate,
    free_port,
    machine_busy_seconds,
    percentile,
    postgres_backends_cpu,
    process_tree_cpu,
    production_settings,
    server_url,
)
from bench.send import contacts_fill

PATH = "/webhooks/twilio/status/"
ACCOUNT_SID = "AC" + "b" * 32
# (weight, channel, callbacks in the order Twilio means them; "status:code" carries an ErrorCode)
SCENARIOS = [
    (40, "sms", ["sent", "delivered"]),
    (22, "whatsapp", ["sent", "delivered", "read"]),
    (10, "sms", ["queued", "sending", "sent", "delivered"]),
    (8, "sms", ["sent", "undelivered:30003"]),
    (6, "whatsapp", ["sent", "failed:63016"]),
    (5, "sms", ["failed:30008"]),
    (4, "whatsapp", ["sent", "delivered", "read", "delivered"]),
    (3, "sms", ["accepted", "scheduled", "canceled"]),
    (2, "sms", ["sent", "partially_delivered", "delivered"]),
]
DUPLICATE_RATE = 0.10
LATE_SID_RATE = 0.02


@dataclass
class Plan:
    channels: dict[str, str] = field(default_factory=dict)  # sid -> channel
    late: set[str] = field(default_factory=set)  # sids saved only after their callbacks
    callbacks: list[tuple[str, str, str]] = field(default_factory=list)  # (sid, status, error code), send order
    out_of_order: int = 0
    duplicates: int = 0
    run_id: int | None = None  # the campaign run of the --campaign-share messages


def plan_build(requests: int, seed: int) -> Plan:
    rng = random.Random(seed)
    weights = [weight for weight, _, _ in SCENARIOS]
    timed: list[tuple[float, str, str, str]] = []
    plan = Plan()
    while len(timed) < requests:
        sid = "SM" + secrets.token_hex(16)
        _, channel, steps = rng.choices(SCENARIOS, weights)[0]
        plan.channels[sid] = channel
        if rng.random() < LATE_SID_RATE:
            plan.late.add(sid)
        start = rng.uniform(0, requests / 3)
        for index, step in enumerate(steps):
            status, _, code = step.partition(":")
            # Jitter wider than the step puts some callbacks before the one meant to precede them.
            at = start + index + rng.uniform(0, 1.6)
            timed.append((at, sid, status, code))
            if rng.random() < DUPLICATE_RATE:
                timed.append((at + rng.uniform(0, 8), sid, status, code))
    timed.sort()
    plan.callbacks = [(sid, status, code) for _, sid, status, code in timed[:requests]]
    plan.duplicates = len(plan.callbacks) - len(set(plan.callbacks))
    plan.out_of_order = _count_out_of_order(plan.callbacks)
    return plan


def _count_out_of_order(callbacks: list[tuple[str, str, str]]) -> int:
    from messaging.providers import status_for
    from messaging.services.status import TRANSITION_RANK

    best: dict[str, int] = {}
    late = 0
    for sid, status, _ in callbacks:
        rank = TRANSITION_RANK.get(status_for(status), 0)
        late += rank < best.get(sid, -1)
        best[sid] = max(rank, best.get(sid, -1))
    return late


def request_build(validator, base_url: str, plan: Plan, sid: str, status: str, code: str) -> tuple[bytes, str]:
    whatsapp = plan.channels[sid] == "whatsapp"
    prefix = "whatsapp:" if whatsapp else ""
    params = {
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": prefix + "+254700000001",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": prefix + "+14155550100",
        "ApiVersion": "2010-04-01",
    }
    if whatsapp:
        params["ChannelPrefix"] = "whatsapp"
    elif status == "delivered":
        params["RawDlrDoneDate"] = "2611272145"
    if code:
        params["ErrorCode"] = code
    signature = validator.compute_signature(base_url + PATH, params)
    return urlencode(params).encode(), signature


class Connection:
    """One client connection replaying its share of callbacks, one at a time.

    The least client CPU per request matters: the machine has two cores and the server needs
    them (http.client alone costs about 0.4 ms of CPU a request here, a third of the budget at
    1,500 req/s). It sends pre-built HTTP/1.1 requests, reads the status line, headers and body,
    keeps the connection while the server does (sync gunicorn workers close it after each
    request) and reconnects otherwise. A few of them share a process through a selector.
    """

    def __init__(self, port: int, requests: list[bytes]) -> None:
        self.port, self.requests, self.index = port, requests, 0
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.sent_at = 0.0
        self.latencies: list[float] = []
        self.errors = self.retries = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.requests)

    def send(self, selector: selectors.BaseSelector) -> None:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            selector.register(self.sock, selectors.EVENT_READ, self)
        self.buffer = b""
        self.sent_at = time.perf_counter()
        self.sock.sendall(self.requests[self.index])

    def receive(self, selector: selectors.BaseSelector) -> None:
        """Read what arrived; when the response is complete, record it and send the next request."""
        chunk = self.sock.recv(65536)
        if not chunk:  # closed before answering: Twilio would retry, and so do we (it is idempotent)
            self.close(selector)
            self.retries += 1
            if self.retries > 3 * len(self.requests):
                raise ConnectionError("the server keeps closing connections without answering")
            self.send(selector)
            return
        self.buffer += chunk
        head, found, body = self.buffer.partition(b"\r\n\r\n")
        if not found or len(body) < _content_length(head.lower()):
            return
        self.latencies.append(time.perf_counter() - self.sent_at)
        self.errors += head[9:12] != b"200"
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


def _content_length(headers: bytes) -> int:
    marker = headers.find(b"content-length:")
    if marker < 0:
        return 0
    end = headers.find(b"\r\n", marker)
    return int(headers[marker + 15 : end if end >= 0 else len(headers)])


def http_request(port: int, body: bytes, signature: str) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: TwilioProxy/1.1\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {signature}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def client_run(port: int, shares: list[list[tuple[bytes, str]]], start_at: float) -> dict:
    """One client process: one connection per share, each sending its requests one after the other."""
    connections = [Connection(port, [http_request(port, body, sig) for body, sig in share]) for share in shares]
    selector = selectors.DefaultSelector()
    time.sleep(max(0.0, start_at - time.time()))
    began, cpu = time.time(), time.process_time()
    for connection in connections:
        if not connection.done:
            connection.send(selector)
    while any(not connection.done for connection in connections):
        ready = selector.select(timeout=30)
        if not ready:
            raise TimeoutError("no answer from the server for 30 s")
        for key, _ in ready:
            key.data.receive(selector)
    ended, cpu = time.time(), time.process_time() - cpu
    return {
        "latencies": [value for connection in connections for value in connection.latencies],
        "errors": sum(connection.errors for connection in connections),
        "retries": sum(connection.retries for connection in connections),
        "began": began,
        "ended": ended,
        "cpu": cpu,
    }


def gunicorn_start(port: int, env: dict[str, str], workers: int, worker_class: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "gunicorn", "config.wsgi", "-w", str(workers), "-k", worker_class]
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


def server_env(port: int, database_url: str, token: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": server_url("REDIS_URL"),
        "TWILIO_AUTH_TOKEN": token,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        **production_settings(),
        "SECURE_SSL_REDIRECT": "false",
        "DB_CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
    }


def messages_create(plan: Plan, campaign_share: float, seed: int) -> int:
    """The plan's messages, queued; ``campaign_share`` of them a running campaign's recipients. Returns how many."""
    from django.db import connection
    from django.utils import timezone

    from messaging.models import Message, MessageStatus

    now = timezone.now()
    rows = [
        Message(
            channel=channel,
            to_address="+254700000001",
            provider_sid=None if sid in plan.late else sid,
            status=MessageStatus.QUEUED,
            queued_at=now,
            body="bench",
            idempotency_key=sid,
        )
        for sid, channel in plan.channels.items()
    ]
    Message.objects.bulk_create(rows, batch_size=5000)
    chosen = random.Random(seed).sample(sorted(plan.channels), round(len(plan.channels) * campaign_share))
    if chosen:
        plan.run_id = recipients_create(chosen)
    with connection.cursor() as cursor:
        # Statistics, as a platform that has run for a while has them (and a snapshot refreshes):
        # planned on an unanalysed table, the counter sync read every recipient of the run per callback.
        cursor.execute("ANALYZE")
    return len(chosen)


def recipients_create(sids: list[str]) -> int:
    """A running campaign whose recipients the messages of ``sids`` are, as the dispatcher leaves them; its run."""
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from django.utils import timezone

    from campaigns.models import Campaign, CampaignRun, Recipient
    from messaging.models import MessageTemplate, Sender

    sender = Sender.objects.create(
        name="bench", channel="sms", kind="long_code", provider="twilio", from_address="+15005550006", mps=100
    )
    template = MessageTemplate.objects.create(name="bench", channel="sms", body="Hello {{ name }}")
    campaign = Campaign.objects.create(name="Bench", template=template, sender=sender, status="running")
    run = CampaignRun.objects.create(campaign=campaign, scheduled_for=timezone.now(), status="running", mps=100)
    with connection.cursor() as cursor:
        contacts_fill(cursor, len(sids))
        cursor.execute("SELECT id FROM audience_contact ORDER BY id")
        contacts = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            """
            WITH chosen AS (
                SELECT m.id AS message_id, row_number() OVER (ORDER BY m.id) AS n
                FROM messaging_message m WHERE m.idempotency_key = ANY(%(sids)s)
            ), made AS (
                INSERT INTO campaigns_recipient (run_id, contact_id, message_id, state, reason, detail, sent_at)
                SELECT %(run)s, c.contact_id, chosen.message_id, 'sent', '', '', now()
                FROM chosen JOIN unnest(%(contacts)s::bigint[]) WITH ORDINALITY AS c (contact_id, n) USING (n)
                RETURNING id, contact_id, message_id
            )
            UPDATE messaging_message m SET source_type_id = %(type)s, source_id = made.id, contact_id = made.contact_id
            FROM made WHERE m.id = made.message_id
            """,
            {
                "sids": sids,
                "contacts": contacts,
                "run": run.pk,
                "type": ContentType.objects.get_for_model(Recipient).pk,
            },
        )
    return run.pk


def late_sids_save(plan: Plan) -> int:
    """Save the late sids as the send service would, then apply what waited for them."""
    from messaging.models import Message
    from messaging.services.status import status_callbacks_apply_pending

    applied = 0
    for message in Message.objects.filter(idempotency_key__in=plan.late):
        message.provider_sid = message.idempotency_key
        message.save(update_fields=["provider_sid"])
        applied += status_callbacks_apply_pending(message)
    return applied


def expected_states(plan: Plan) -> dict[str, tuple[str, frozenset[str], str]]:
    """sid -> (status, timestamp fields set, error code) that its callbacks call for, in any order."""
    from messaging.providers import status_for
    from messaging.services.status import STAMP_COLUMNS, TRANSITION_RANK

    seen: dict[str, set[tuple[str, str]]] = {sid: set() for sid in plan.channels}
    for sid, status, code in plan.callbacks:
        seen[sid].add((status, code))
    expected = {}
    for sid, events in seen.items():
        status, code, fields = "queued", "", {"queued_at"}
        for raw, raw_code in events:
            ours = status_for(raw)
            fields.update(STAMP_COLUMNS[ours])
            if TRANSITION_RANK[ours] > TRANSITION_RANK[status]:
                status, code = ours, raw_code
        expected[sid] = (status, frozenset(fields), code)
    return expected


def database_check(plan: Plan) -> dict[str, int]:
    from messaging.models import Message, ProviderCallback
    from messaging.services.status import TIMESTAMP_FIELDS

    sent = {(sid, status) for sid, status, _ in plan.callbacks}
    stored = set(ProviderCallback.objects.filter(provider_sid__in=plan.channels).values_list("provider_sid", "status"))
    applied = ProviderCallback.objects.filter(provider_sid__in=plan.channels, applied_at__isnull=False).count()
    fields = sorted(set(TIMESTAMP_FIELDS.values()))
    wrong = 0
    expected = expected_states(plan)
    for row in Message.objects.filter(provider_sid__in=plan.channels).values(
        "provider_sid", "status", "error_code", *fields
    ):
        status, timestamps, code = expected.pop(row["provider_sid"])
        reached = frozenset(name for name in fields if row[name] is not None)
        wrong += (row["status"], reached, row["error_code"]) != (status, timestamps, code)
    counters_wrong = 0
    if plan.run_id is not None:  # the counters the callbacks kept, against a recount from the rows
        from reporting.counters import counters_read, counters_recounted

        kept, recounted = counters_read([plan.run_id]), counters_recounted([plan.run_id])
        counters_wrong = sum(kept.get(key) != recounted.get(key) for key in kept.keys() | recounted.keys())
    return {
        "unique_events": len(sent),
        "stored": len(stored & sent),
        "missing_events": len(sent - stored),
        "applied": applied,
        "pending": len(stored) - applied,
        "wrong_messages": wrong + len(expected),
        "wrong_counters": counters_wrong,
    }


def fire(port: int, requests: list[tuple[bytes, str]], args: argparse.Namespace, server_pid: int) -> dict:
    shares = [requests[index :: args.concurrency] for index in range(args.concurrency)]
    processes = min(args.client_processes, args.concurrency)
    groups = [shares[index::processes] for index in range(processes)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        start_at = time.time() + 1.5  # every client starts together, after the pool has spawned
        pending = pool.starmap_async(client_run, [(port, group, start_at) for group in groups])
        time.sleep(max(0.0, start_at - time.time() - 0.02))
        before = _cpu_snapshot(server_pid, args.database)
        results = pending.get()
        after = _cpu_snapshot(server_pid, args.database)
    latencies = sorted(value for result in results for value in result["latencies"])
    elapsed = max(result["ended"] for result in results) - min(result["began"] for result in results)
    used = {key: after[key] - before[key] for key in before}
    used["clients"] = sum(result["cpu"] for result in results)
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": sum(result["errors"] for result in results),
        "retries": sum(result["retries"] for result in results),
        "elapsed_s": elapsed,
        "cpu": used,
    }


def _cpu_snapshot(server_pid: int, database: str) -> dict[str, float]:
    return {
        "machine": machine_busy_seconds(),
        "gunicorn": process_tree_cpu(server_pid),
        "postgres": postgres_backends_cpu(database),
    }


def cpu_report(measured: dict, requests: int) -> dict:
    """Who used the CPU during the run: this machine is shared, so say how much was ours."""
    used, elapsed = measured["cpu"], measured["elapsed_s"]
    ours = used["gunicorn"] + used["postgres"] + used["clients"]
    per_request = {key: round(used[key] / requests * 1e6) for key in ("gunicorn", "postgres", "clients")}
    return {
        "cpu_us_per_request": per_request,
        "cores": os.cpu_count(),
        "cores_busy": round(used["machine"] / elapsed, 2),
        "cores_used_by_other_processes": round(max(0.0, used["machine"] - ours) / elapsed, 2),
    }


def warm_up(port: int, token: str, workers: int) -> None:
    """Open every worker's database connection before measuring (unknown sids, left pending)."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(token)
    plan = Plan(channels={f"SMwarmup{index:026d}": "sms" for index in range(workers * 8)})
    requests = [request_build(validator, f"http://127.0.0.1:{port}", plan, sid, "sent", "") for sid in plan.channels]
    result = client_run(port, [requests], time.time())
    if result["errors"]:
        raise SystemExit(f"warm-up failed: {result['errors']} of {len(requests)} requests were not answered 200")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8, help="connections sending at the same time")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the connections share")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-class", default="sync")
    parser.add_argument("--database", default="bench_webhooks")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--campaign-share", type=float, default=0.5, help="share of the messages that are a campaign's recipients"
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.campaign_share <= 1.0:
        parser.error(f"--campaign-share must be between 0 and 1, not {args.campaign_share}")

    database_url = database_recreate(server_url("DATABASE_URL"), args.database)
    port, token = free_port(), secrets.token_hex(16)
    env = server_env(port, database_url, token)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    os.environ.update({key: env[key] for key in ("DATABASE_URL", "REDIS_URL", "TWILIO_AUTH_TOKEN")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connections
    from twilio.request_validator import RequestValidator

    plan = plan_build(args.requests, args.seed)
    campaign_messages = messages_create(plan, args.campaign_share, args.seed)
    validator = RequestValidator(token)
    base_url = env["PUBLIC_BASE_URL"]
    requests = [request_build(validator, base_url, plan, *callback) for callback in plan.callbacks]
    connections.close_all()
    server = gunicorn_start(port, env, args.workers, args.worker_class)
    try:
        warm_up(port, token, args.workers)
        measured = fire(port, requests, args, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    late_applied = late_sids_save(plan)
    check = database_check(plan)
    lost = check["missing_events"] + check["pending"] + check["wrong_messages"]
    print(
        f"{len(plan.channels)} messages ({campaign_messages} a campaign's recipients, "
        f"{len(plan.late)} with their sid saved after their callbacks, "
        f"{late_applied} events applied then), {args.requests} callbacks: {check['unique_events']} distinct, "
        f"{plan.duplicates} duplicates, {plan.out_of_order} out of order; {args.concurrency} connections "
        f"in {min(args.client_processes, args.concurrency)} client processes, "
        f"gunicorn {args.workers} {args.worker_class} workers; {measured['errors']} non-200, "
        f"{measured['retries']} retried connections; {measured['elapsed_s']:.2f} s"
    )
    print(json.dumps({"check": check, "cpu": cpu_report(measured, args.requests)}))
    summary = {
        "bench": "webhooks",
        "requests": args.requests,
        "rps": round(measured["rps"]),
        "p50_ms": round(measured["p50_ms"], 1),
        "p99_ms": round(measured["p99_ms"], 1),
        "applied": check["applied"],
        "lost": lost,
        "wrong_counters": check["wrong_counters"],
        "conditions": {
            "campaign_share": args.campaign_share,
            "gunicorn": f"{args.workers} {args.worker_class} workers",
            "connections": args.concurrency,
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
