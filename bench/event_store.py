"""Event storage benchmark: is the events table still fast with 10M rows (and so at 100M)?

    flock /tmp/bench.lock python -m bench.event_store [--events 10000000] [--baseline 100000]

It creates its own database (``bench_event_store`` on the DATABASE_URL server), migrates it (the
real schema and indexes), and adds contacts, a triggered campaign's run, and events by INSERT ...
SELECT generate_series: arriving in time order over the last 120 days, 20 names of skewed
frequency, contacts skewed too (a few hold thousands of events, most a handful), random
idempotency keys, and a recipient for one event in ten (the ones retention keeps). First at the
baseline size, where everything is measured once; then up to ``--events`` (the indexes are
dropped during the load and rebuilt after, as a restore would), where everything is measured again:

- a contact's history, first page (the selector behind GET /api/v1/contacts/{id}/events/), p50
  and p99 over random contacts, and the same through the API with Django's test client;
- one event name in a one-hour window of ``received_at``, first page and count;
- the latest page of all events (the events list's default order);
- inserts with the table at that size: one event per transaction (the single endpoint's write),
  and 1,000 per statement (a batch);
- retention: event_retention_purge over the oldest tenth of the table (rows a second).

The last line printed is the JSON summary, with the conditions it was measured in.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

from bench._util import database_recreate, database_url_named, percentile, server_url

DATABASE = "bench_event_store"
DAYS = 120
CONTACT_SHARE = 50  # events per contact on average
NAMES = [
    "app_opened",
    "page_viewed",
    "product_viewed",
    "cart_updated",
    "search",
    "cart_abandoned",
    "checkout_started",
    "order_placed",
    "order_shipped",
    "order_delivered",
    "otp_requested",
    "login",
    "logout",
    "review_left",
    "coupon_applied",
    "refund_requested",
    "subscription_renewed",
    "payment_failed",
    "support_ticket",
    "account_closed",
]
SAMPLES = 400


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "true")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def sql(statement: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else cursor.rowcount


def scalar(statement: str, params=None):
    return sql(statement, params)[0][0]


def fill_base(contacts: int) -> tuple[int, int]:
    from campaigns.models import Campaign, CampaignRun
    from messaging.models import MessageTemplate, Sender

    sql(
        f"""INSERT INTO audience_contact (phone, channel, name, email, locale, timezone, attributes, consent_status,
                created_at, updated_at)
            SELECT '+2547' || lpad(i::text, 8, '0'), 'sms', '', '', 'en', '', '{{}}', 'opted_in', now(), now()
            FROM generate_series(1, {contacts}) AS i"""
    )
    template = MessageTemplate.objects.create(name="bench", channel="sms", body="Order {{ event.order_id }}")
    sender = Sender.objects.create(name="bench", channel="sms", kind="long_code", from_address="+447400000001")
    campaign = Campaign.objects.create(
        name="bench", kind="triggered", template=template, sender=sender, status="running", trigger_event="order_placed"
    )
    run = CampaignRun.objects.create(campaign=campaign, scheduled_for="2026-11-20T09:00Z", mps=100, total=0)
    return campaign.pk, run.pk


def events_insert(first: int, last: int, total: int, contacts: int, campaign_id: int, run_id: int) -> None:
    """Events first..last of ``total``, spread in arrival order over DAYS; one in ten answered."""
    low = scalar("SELECT min(id) FROM audience_contact")
    before = scalar("SELECT coalesce(max(id), 0) FROM campaigns_event")
    names = "ARRAY[" + ",".join(f"'{name}'" for name in NAMES) + "]"
    # received_at grows with g (arrival order = id order); occurred_at up to 10 minutes earlier.
    # Contacts: power law (a few heavy ones); names: skewed towards the first ones.
    sql(
        f"""INSERT INTO campaigns_event (contact_id, name, properties, occurred_at, received_at, idempotency_key,
                request_hash)
            SELECT {low} + floor({contacts} * power(random(), 3))::int,
                   ({names})[1 + floor(20 * power(random(), 2))::int],
                   jsonb_build_object('order_id', 'A-' || g, 'total', g % 500, 'currency', 'KES'),
                   t - random() * interval '10 minutes', t, md5(g::text || 'k'), ''
            FROM generate_series({first}, {last}) AS g,
                 LATERAL (SELECT now() - interval '{DAYS} days' * (1 - g::float8 / {total}) AS t) AS at
            ORDER BY g"""
    )
    sql(
        f"""INSERT INTO campaigns_recipient (run_id, contact_id, state, reason, detail, created_at, event_id)
            SELECT {run_id}, e.contact_id, 'sent', '', '', e.received_at, e.id
            FROM campaigns_event e WHERE e.id > %s AND e.id %% 10 = 0""",
        [before],
    )
    sql(
        f"""INSERT INTO campaigns_event_matched_campaigns (event_id, campaign_id)
            SELECT event_id, {campaign_id} FROM campaigns_recipient WHERE run_id = {run_id} AND event_id > %s""",
        [before],
    )


def indexes_drop() -> list[str]:
    """Drop campaigns_event's secondary indexes (and the unique key); returns what rebuilds them."""
    rebuild = []
    for name, definition in sql(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'campaigns_event' AND indexname <> "
        "'campaigns_event_pkey'"
    ):
        constraint = scalar("SELECT count(*) FROM pg_constraint WHERE conname = %s", [name])
        if constraint:
            sql(f"ALTER TABLE campaigns_event DROP CONSTRAINT {name}")
            rebuild += [definition, f"ALTER TABLE campaigns_event ADD CONSTRAINT {name} UNIQUE USING INDEX {name}"]
        else:
            sql(f"DROP INDEX {name}")
            rebuild.append(definition)
    return rebuild


def timed(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def figures(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(times, 0.5), 2), "p99_ms": round(percentile(times, 0.99), 2)}


def measure(contacts: int, rng: random.Random, client) -> dict:
    from campaigns.models import Event
    from campaigns.selectors import contact_event_history

    low = scalar("SELECT min(id) FROM audience_contact")
    sample = [low + int(contacts * rng.random() ** 3) for _ in range(SAMPLES)]  # as skewed as the events
    picks = iter(sample * 2)
    history = timed(lambda: list(contact_event_history(next(picks))[:51]), SAMPLES)
    api_picks = iter(sample)
    api = timed(lambda: client.get(f"/api/v1/contacts/{next(api_picks)}/events/").status_code, SAMPLES // 4)
    heaviest = low  # contacts are skewed towards the first
    heavy = timed(lambda: list(contact_event_history(heaviest)[:51]), 20)
    plan = contact_event_history(sample[0])[:51].explain()
    span = scalar("SELECT extract(epoch FROM max(received_at) - min(received_at)) FROM campaigns_event")
    start = scalar("SELECT min(received_at) FROM campaigns_event")

    def window():
        import datetime as dt

        at = start + dt.timedelta(seconds=rng.random() * max(float(span) - 3600, 0))
        return Event.objects.filter(
            name=rng.choice(NAMES[:10]), received_at__gte=at, received_at__lt=at + dt.timedelta(hours=1)
        )

    by_name = timed(lambda: list(window().order_by("-received_at", "-id")[:51]), SAMPLES // 2)
    by_name_count = timed(lambda: window().count(), SAMPLES // 4)
    latest = timed(lambda: list(Event.objects.order_by("-received_at", "-id")[:51]), 20)
    return {
        "history": figures(history),
        "history_api": figures(api),
        "history_heaviest_contact": {
            **figures(heavy),
            "events": scalar("SELECT count(*) FROM campaigns_event WHERE contact_id = %s", [heaviest]),
        },
        "history_plan_uses": "event_contact_received" in plan,
        "name_hour_page": figures(by_name),
        "name_hour_count": figures(by_name_count),
        "latest_page": figures(latest),
    }


def inserts(contacts: int, single: int, batches: int) -> dict[str, float]:
    """Insert rates with the table as it is: one event a transaction, and 1,000 a statement."""
    from django.db import transaction

    low = scalar("SELECT min(id) FROM audience_contact")
    sql("CHECKPOINT")  # each measure starts alike: no earlier work's writes left in the buffers
    wal = scalar("SELECT pg_current_wal_lsn()")
    started = time.perf_counter()
    for _ in range(single):
        with transaction.atomic():
            sql(
                """INSERT INTO campaigns_event (contact_id, name, properties, occurred_at, received_at,
                        idempotency_key, request_hash)
                   VALUES (%s, 'order_placed', '{"order_id": "B-1", "total": 12}', now(), now(),
                           md5(random()::text), '')""",
                [low + random.randrange(contacts)],
            )
    single_rate = single / (time.perf_counter() - started)
    single_wal = scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [wal]) / single
    sql("CHECKPOINT")
    wal = scalar("SELECT pg_current_wal_lsn()")
    started = time.perf_counter()
    for _ in range(batches):
        with transaction.atomic():
            sql(
                f"""INSERT INTO campaigns_event (contact_id, name, properties, occurred_at, received_at,
                        idempotency_key, request_hash)
                    SELECT {low} + floor({contacts} * random())::int, 'order_placed',
                           jsonb_build_object('order_id', 'C-' || g, 'total', g), now(), now(), md5(random()::text), ''
                    FROM generate_series(1, 1000) AS g"""
            )
    batch_rate = batches * 1000 / (time.perf_counter() - started)
    batch_wal = scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [wal]) / (batches * 1000)
    return {
        "single_per_s": round(single_rate),
        "batch_1000_per_s": round(batch_rate),
        "wal_bytes_per_event_single": round(single_wal),
        "wal_bytes_per_event_batch": round(batch_wal),
    }


def retention(share: float) -> dict[str, float]:
    """Purge the oldest ``share`` of events with the real service; rows handled a second."""
    import datetime as dt

    from django.utils import timezone

    from campaigns.services import event_retention

    days = DAYS * (1 - share)
    before = scalar(
        "SELECT count(*) FROM campaigns_event WHERE received_at < %s", [timezone.now() - dt.timedelta(days=days)]
    )
    event_retention.MAX_BATCHES_PER_RUN = 1_000_000
    started = time.perf_counter()
    done = event_retention.event_retention_purge(days=days, batch_size=5000)
    seconds = time.perf_counter() - started
    again_started = time.perf_counter()
    again = event_retention.event_retention_purge(days=days, batch_size=5000)
    return {
        "old_rows": before,
        "deleted": done["deleted"],
        "kept_emptied": done["emptied"],
        "rows_per_s": round(before / seconds) if seconds else 0,
        "seconds": round(seconds, 2),
        "second_run_ms": round((time.perf_counter() - again_started) * 1000, 1),
        "second_run_deleted": again["deleted"],
    }


def sizes() -> dict[str, str]:
    return {
        "table": scalar("SELECT pg_size_pretty(pg_table_size('campaigns_event'))"),
        "indexes": scalar("SELECT pg_size_pretty(pg_indexes_size('campaigns_event'))"),
        "index_count": scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'campaigns_event'"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--baseline", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1_000_000, help="events per INSERT during the big load")
    parser.add_argument("--keep-db", action="store_true", help="leave the benchmark's database for inspection")
    parser.add_argument("--database", default=DATABASE, help=f"database to create and drop (default {DATABASE})")
    args = parser.parse_args(argv)
    server = server_url("DATABASE_URL")
    os.environ.setdefault("REDIS_URL", server_url("REDIS_URL"))
    setup_django(database_recreate(server, args.database))
    postgres = {
        "version": scalar("SHOW server_version"),
        "shared_buffers": scalar("SHOW shared_buffers"),
        "work_mem": scalar("SHOW work_mem"),
    }

    from django.contrib.auth import get_user_model
    from django.test import Client

    rng = random.Random(7)
    contacts = max(args.events // CONTACT_SHARE, 1000)
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-pass-123")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    campaign_id, run_id = fill_base(contacts)

    started = time.perf_counter()
    events_insert(1, args.baseline, args.events, contacts, campaign_id, run_id)
    sql("VACUUM ANALYZE campaigns_event")
    print(f"baseline {args.baseline:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    baseline = {**measure(contacts, rng, client), "size": sizes()}
    highest = scalar("SELECT max(id) FROM campaigns_event")
    baseline["inserts"] = inserts(contacts, 2000, 40)
    # Those rows arrived "now": gone again, so ids keep following received_at as in production.
    sql("DELETE FROM campaigns_event WHERE id > %s", [highest])
    print(json.dumps({"baseline": baseline}), file=sys.stderr)

    started = time.perf_counter()
    sql("SET maintenance_work_mem = '1GB'")
    rebuild = indexes_drop()
    for first in range(args.baseline + 1, args.events + 1, args.chunk):
        events_insert(first, min(first + args.chunk - 1, args.events), args.events, contacts, campaign_id, run_id)
        print(f"  {min(first + args.chunk - 1, args.events):,} events", file=sys.stderr)
    load_seconds = time.perf_counter() - started
    for statement in rebuild:
        sql(statement)
    sql("VACUUM ANALYZE campaigns_event")
    sql("VACUUM ANALYZE campaigns_recipient")
    sql("VACUUM ANALYZE campaigns_event_matched_campaigns")  # as autovacuum would: the history's prefetch plans on it
    fill_seconds = time.perf_counter() - started
    print(f"{args.events:,} events in {fill_seconds:.1f} s (insert {load_seconds:.1f} s)", file=sys.stderr)
    full = {**measure(contacts, rng, client), "inserts": inserts(contacts, 2000, 40), "size": sizes()}
    full["retention"] = retention(0.1)
    print("retention done", file=sys.stderr)
    # What each index keyed at random costs an insert: measured again after the purge, then without.
    full["inserts_after_retention"] = inserts(contacts, 1000, 40)
    sql("CREATE INDEX event_contact_occurred ON campaigns_event (contact_id, occurred_at DESC, id DESC)")
    full["inserts_with_a_second_contact_index"] = inserts(contacts, 1000, 40)
    sql("DROP INDEX event_contact_occurred")
    sql("DROP INDEX event_contact_received")
    full["inserts_without_contact_index"] = inserts(contacts, 1000, 40)
    sql("ALTER TABLE campaigns_event DROP CONSTRAINT campaigns_event_idempotency_key_key")
    full["inserts_without_contact_index_and_idempotency_key"] = inserts(contacts, 1000, 40)
    from django.db import connections

    connections.close_all()
    # Retention's baseline: the same purge over a table of the baseline's size, in a fresh database.
    setup_django(database_recreate(server, args.database))
    campaign_id, run_id = fill_base(max(args.baseline // CONTACT_SHARE, 1000))
    events_insert(1, args.baseline, args.baseline, max(args.baseline // CONTACT_SHARE, 1000), campaign_id, run_id)
    sql("VACUUM ANALYZE campaigns_event")
    baseline_retention = retention(0.1)
    baseline["retention"] = baseline_retention

    connections.close_all()
    if not args.keep_db:
        import psycopg

        with psycopg.connect(database_url_named(server, "postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    import django

    result = {
        "bench": "event_store",
        "events": args.events,
        "history_p50_ms": full["history"]["p50_ms"],
        "history_p99_ms": full["history"]["p99_ms"],
        "history_api_p99_ms": full["history_api"]["p99_ms"],
        "name_hour_page_p99_ms": full["name_hour_page"]["p99_ms"],
        "name_hour_count_p99_ms": full["name_hour_count"]["p99_ms"],
        "latest_page_p99_ms": full["latest_page"]["p99_ms"],
        "insert_single_per_s": full["inserts"]["single_per_s"],
        "insert_batch_per_s": full["inserts"]["batch_1000_per_s"],
        "retention_rows_per_s": full["retention"]["rows_per_s"],
        "fill_seconds": round(fill_seconds, 1),
        "at_events": full,
        "baseline_events": args.baseline,
        "baseline": baseline,
        "conditions": {
            "contacts": contacts,
            "names": len(NAMES),
            "days": DAYS,
            "answered_share": 0.1,
            "history_page": 50,
            "samples": SAMPLES,
            "postgres": postgres,
            "machine_ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "django": django.get_version(),
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
