"""Send benchmark: a campaign run of N messages through the whole delivery pipeline.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python -m bench.send --messages 2400 --mps 80

It recreates its own database (``bench_send``), inserts N opted-in contacts, starts the fake
Twilio server (counting requests per recipient and recording when each arrived) answering as
slowly as the real API by default (log-normal latency, median 250 ms and p99 1.5 s, with one
send in a thousand stalling 4 s; ``--latency`` sets the median, ``--fixed-latency`` makes it
constant) and Celery worker processes (threads pool) pointed at it through the real twilio
client, asks the campaign's dry run for its estimated duration, launches the campaign on a
sender of M messages per second (M = 0: unthrottled, i.e. a sender limit far above reach), and
waits for the run to complete. Measured at the fake server, where Twilio would count:
``msg_per_s`` is the rate requests arrived at (N - 1 over the time from the first arrival to
the last), ``vs_ideal`` that time over what N requests take at exactly MPS (N - 1 over MPS);
``msg_per_s_to_last_answer`` is N over the time from the first arrival to the last answer
recorded, which adds the latency of the run's slowest final requests (a stall of seconds at
the realistic latency); ``max_in_any_second`` is the most requests in any sliding one-second window
(``max_in_a_calendar_second`` in any whole second; ``max_in_any_second_leaving`` over when the
worker threads started the calls, which a loaded machine's jitter on the way, ``leave_to_arrival_ms``,
does not move); ``duplicates`` counts requests beyond one per
recipient, ``lost`` recipients it never saw; ``estimate_vs_measured`` is the dry run's estimate
over the seconds from launch to the run's completion; ``leave_to_arrival_ms`` how long after a
request left a worker the fake server saw it. Unthrottled, the same run then measures its
baseline: the twilio client alone against a fresh fake server with the same latency, with the
workers' processes and as many threads as they may have requests in flight, but no database,
Celery or pacing (``baseline_msg_per_s``, ``vs_baseline``). ``--workers`` sets the worker
processes (4 for a scaled-out deployment); ``--pgbouncer`` puts a private PgBouncer in transaction
mode (``--pool-size`` server connections) between them and PostgreSQL, with DATABASE_POOLER=pgbouncer.
``database`` says how they connected and the most connections PostgreSQL served at once (and, through
PgBouncer, its most clients). The JSON line is last.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import pgbouncer
from bench._util import BASE_DIR, database_recreate, percentile, production_settings, server_url

SID = "AC" + "5e" * 16
TOKEN = "bench-send-token"
UNTHROTTLED_MPS = 1_000_000


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def contacts_fill(cursor, n: int) -> None:
    cursor.execute(
        """
        INSERT INTO audience_contact (phone, channel, name, email, locale, timezone, attributes, consent_status,
                                      consent_updated_at, created_at, updated_at)
        SELECT '+2547' || lpad(i::text, 8, '0'), 'sms', 'Contact ' || i, '', 'en', 'UTC', '{}'::jsonb,
               'opted_in', now(), now(), now()
        FROM generate_series(1::bigint, %s) AS i
        """,
        [n],
    )


def workers_start(count: int, concurrency: int, env: dict) -> list[subprocess.Popen]:
    processes = []
    for index in range(count):
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads"]
        command += ["--concurrency", str(concurrency), "--without-gossip", "--without-mingle", "-l", "warning"]
        command += ["-n", f"bench-send-{index}@%h"]
        processes.append(subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL))
    return processes


def workers_wait_ready(app, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=1.0) or []) >= count:
            return
    raise SystemExit("the Celery workers did not start")


def _client_sends(base_url: str, first: int, count: int, threads: int, ready, go, spans) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import django

    django.setup()  # a spawned process (a fork would inherit the broker connections' locks)
    from messaging.providers import SendRequest
    from messaging.providers.twilio.client import TwilioProvider

    local = threading.local()

    def one(n: int) -> None:
        if not hasattr(local, "provider"):
            local.provider = TwilioProvider(SID, TOKEN, base_url, (3.05, 10.0))
        local.provider.send(SendRequest(to=f"+2547{n:08d}", channel="sms", from_="+15005550006", body="Hello"))

    ready.release()
    go.wait()
    started = time.time()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(first, first + count)))
    spans.put((started, time.time()))


def client_ceiling(messages: int, latency, processes: int, threads: int) -> float:
    """Messages per second of the twilio client alone against the fake server: the same processes
    and send threads as the workers, no database, no Celery, no pacing (the pipeline's ceiling).

    At a realistic latency the run's slowest answers would weigh more than the rate in a short
    baseline: it is measured, like ``msg_per_s``, from when its requests arrived."""
    import multiprocessing

    from tests.fake_twilio import FakeTwilio

    with FakeTwilio(account_sid=SID, auth_token=TOKEN, latency=latency, callbacks="off") as fake:
        share = messages // processes
        context = multiprocessing.get_context("spawn")
        ready, go, spans = context.Semaphore(0), context.Event(), context.Queue()
        children = [
            context.Process(target=_client_sends, args=(fake.base_url, i * share, share, threads, ready, go, spans))
            for i in range(processes)
        ]
        for child in children:
            child.start()
        for _ in children:
            ready.acquire()
        go.set()
        for _ in children:
            spans.get(timeout=600)
        for child in children:
            child.join()
        if fake.stats()["requests"] != share * processes:
            raise SystemExit("the client-only baseline lost requests")
        arrivals = fake.arrival_times()
    # Measured like the pipeline's msg_per_s: the rate requests reached the server.
    return round((len(arrivals) - 1) / (max(arrivals) - min(arrivals)), 1)


def main(argv: list[str] | None = None) -> int:
    from tests.fake_twilio import latency as latency_model

    parser = argparse.ArgumentParser(prog="python -m bench.send", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--mps", type=int, default=80, help="the sender's messages per second; 0 = unthrottled")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="tasks per worker (each with its send threads)")
    parser.add_argument("--chains", type=int, default=0, help="dispatchers for the run; 0 = the platform's choice")
    latency_model.arguments_add(parser)
    parser.add_argument("--seed", type=int, default=20261204, help="the fake server's random draws")
    parser.add_argument("--arrivals-file", help="write the fake server's arrival times here, one a line")
    pgbouncer.arguments_add(parser)
    args = parser.parse_args(argv)
    latency = latency_model.from_arguments(args)

    from tests.fake_twilio import FakeTwilio

    fake = FakeTwilio(account_sid=SID, auth_token=TOKEN, latency=latency, callbacks="off", seed=args.seed).start()
    database_url = database_recreate(server_url("DATABASE_URL"), "bench_send")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": server_url("REDIS_URL"),
        "MESSAGING_PROVIDER": "twilio",
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_API_BASE_URL": fake.base_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        **production_settings(),
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    bouncer = pgbouncer.PgBouncer(database_url, pool_size=args.pool_size).start() if args.pgbouncer else None
    if bouncer:
        env.update(DATABASE_URL=bouncer.url(), DATABASE_POOLER="pgbouncer")
    os.environ.update(env)

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from campaigns.models import Campaign, CampaignRun
    from campaigns.services import campaign_dry_run, campaign_launch, dispatch
    from config.celery import app
    from messaging import pacing
    from messaging.models import Message, MessageTemplate, Sender
    from messaging.services import inflight

    with connection.cursor() as cursor:
        contacts_fill(cursor, args.messages)
    mps = args.mps or UNTHROTTLED_MPS
    sender = Sender.objects.create(
        name="bench", channel="sms", kind="short_code", provider="twilio", from_address="+15005550006", mps=mps
    )
    pacing.pacing_reset(sender.pk)
    inflight.latency_forget(sender.pk)  # a fresh database reuses sender ids: no figure from an earlier run
    template = MessageTemplate.objects.create(name="bench", channel="sms", body="Hello {{ name }}")
    campaign = Campaign.objects.create(name="bench", template=template, sender=sender)

    app.control.purge()
    connections = pgbouncer.Connections(database_url, "bench_send", bouncer).__enter__()
    workers = workers_start(args.workers, args.concurrency, env)
    try:
        workers_wait_ready(app, args.workers)
        estimate = campaign_dry_run(campaign)["estimated_seconds"]
        started = time.monotonic()
        run = campaign_launch(campaign)  # its dispatchers are enqueued at commit
        if args.chains > dispatch.chains_for(mps):
            dispatch.dispatch_start(run.pk, chains=args.chains)  # the places the platform did not start
        deadline = started + (args.messages / args.mps if args.mps else args.messages / 200) * 2 + 120
        while time.monotonic() < deadline:
            if CampaignRun.objects.values_list("status", flat=True).get(pk=run.pk) == "completed":
                break
            time.sleep(0.05)
        wall = time.monotonic() - started
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        app.control.purge()
        connections.__exit__(None, None, None)

    run = CampaignRun.objects.get(pk=run.pk)
    sent = list(Message.objects.values_list("to_address", "sending_at", "queued_at"))
    answers = [queued.timestamp() for _, _, queued in sent if queued]
    arrivals = fake.arrival_times()
    arrived = fake.arrived_by_recipient()
    gaps = sorted((arrived[to] - leaving.timestamp()) * 1000 for to, leaving, _ in sent if leaving and to in arrived)
    served = sorted(fake.latencies())
    if args.arrivals_file:
        Path(args.arrivals_file).write_text("".join(f"{t:.6f}\n" for t in sorted(arrivals)))
    stats = fake.stats()
    fake.stop()
    by_recipient = stats["by_recipient"]
    arrived_span = (max(arrivals) - min(arrivals)) if len(arrivals) > 1 else 0.0
    span = (max(answers) - min(arrivals)) if arrivals and answers else 0.0
    ideal = (len(arrivals) - 1) / args.mps if args.mps else None
    result = {
        "bench": "send",
        "messages": args.messages,
        "mps_limit": args.mps,
        "msg_per_s": round((len(arrivals) - 1) / arrived_span, 1) if arrived_span else 0.0,
        "max_in_any_second": max_in_any_window(arrivals),
        "max_in_a_calendar_second": max(Counter(int(t) for t in arrivals).values(), default=0),
        # The same window over when the workers' threads started each call (Message.sending_at): the
        # pacing where the platform keeps it, before the way to the server adds its jitter.
        "max_in_any_second_leaving": max_in_any_window([leaving.timestamp() for _, leaving, _ in sent if leaving]),
        "duplicates": sum(count - 1 for count in by_recipient.values() if count > 1),
        "lost": args.messages - sum(1 for count in by_recipient.values() if count),
        "seconds": round(arrived_span, 2),
        "ideal_seconds": round(ideal, 2) if ideal else None,
        "vs_ideal": round(arrived_span / ideal, 3) if ideal and arrived_span else None,
        "seconds_to_last_answer": round(span, 2),
        "msg_per_s_to_last_answer": round(len(answers) / span, 1) if span else 0.0,
        "wall_seconds_from_launch": round(wall, 2),
        "estimated_seconds": estimate,
        "estimate_vs_measured": round(estimate / wall, 3) if estimate and wall else None,
        "run": {"status": run.status, "sent": run.sent, "failed": run.failed, "skipped": run.skipped},
        "workers": args.workers,
        "tasks_per_worker": args.concurrency,
        "chains": args.chains or dispatch.chains_for(mps),
        "latency": {
            **latency.describe(),
            "served_p50_ms": round(percentile(served, 0.5) * 1000),
            "served_p99_ms": round(percentile(served, 0.99) * 1000),
            "served_max_ms": round(served[-1] * 1000) if served else 0,
        },
        "leave_to_arrival_ms": {
            "p50": round(percentile(gaps, 0.5), 1),
            "p99": round(percentile(gaps, 0.99), 1),
            "max": round(gaps[-1], 1) if gaps else None,
        },
        "max_in_flight_per_process": settings.DELIVERY_MAX_IN_FLIGHT,
        "database": connections.describe(),
    }
    if not args.mps:  # the ceiling the pipeline is measured against, in the same run
        threads = settings.DELIVERY_MAX_IN_FLIGHT
        baseline = client_ceiling(max(2000, args.messages // 4), latency, args.workers, threads)
        result["baseline"] = f"twilio client alone: {args.workers} processes x {threads} threads, no database"
        result["baseline_msg_per_s"] = baseline
        result["vs_baseline"] = round(result["msg_per_s"] / baseline, 3) if baseline else None
    print(json.dumps(result), flush=True)
    if bouncer:
        from django.db import connections as django_connections

        django_connections.close_all()
        bouncer.stop()
    return 0 if result["duplicates"] == 0 and result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
