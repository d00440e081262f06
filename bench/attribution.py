"""Attribution benchmark: a backlog of goal events left unchecked for two days, found among many checked ones.

    python -m bench.attribution [--events 1000000] [--backlog 5000]

It creates its own database (``bench_attribution`` on the DATABASE_URL server): a campaign with the
goal ``order_placed`` and a run that messaged ``--backlog`` contacts three days ago, ``--events``
goal events spread over the last seven days that were all looked at already (``AttributionCheck``
rows), and ``--backlog`` events of the messaged contacts received two days ago that were not (the
beat was down), behind a horizon left just before them. It times the sweeps
(``conversions_attribute``, 1,000 events each) until the backlog is attributed, then a sweep with
nothing left, and beside them the query without a horizon: every unchecked goal event found by an
anti-join over all the events of the name. It checks that every backlog event converted, once.
The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta

import psycopg

from bench._util import database_recreate, database_url_named, percentile, server_url
from bench.reporting import setup_django

DATABASE = "bench_attribution"

# Every unchecked goal event of the name, whatever its age: the query a sweep without a horizon needs.
NO_HORIZON_SQL = """
SELECT e.id FROM campaigns_event e
WHERE e.name = 'order_placed' AND e.received_at <= now()
  AND NOT EXISTS (SELECT 1 FROM campaigns_attributioncheck c WHERE c.event_id = e.id)
ORDER BY e.received_at LIMIT 1000
"""


def fill(events: int, backlog: int) -> int:
    from django.db import connection, transaction
    from django.utils import timezone

    from campaigns.models import AttributionHorizon, Campaign, CampaignRun
    from messaging.models import MessageTemplate, Sender

    template = MessageTemplate.objects.create(name="bench", channel="sms", body="Hello")
    sender = Sender.objects.create(name="bench", channel="sms", kind="long_code", from_address="+447400000001")
    campaign = Campaign.objects.create(
        name="bench",
        template=template,
        sender=sender,
        status="running",
        goal_event="order_placed",
        goal_window=timedelta(days=3),
        goal_model="last_message",
    )
    run = CampaignRun.objects.create(campaign=campaign, scheduled_for=timezone.now() - timedelta(days=3), mps=100)
    statements = [
        f"""INSERT INTO audience_contact (phone, channel, name, email, locale, timezone, attributes, consent_status,
                created_at, updated_at)
            SELECT '+2547' || lpad(i::text, 8, '0'), 'sms', '', '', 'en', '', '{{}}', 'opted_in', now(), now()
            FROM generate_series(1, {backlog}) AS i""",
        f"""INSERT INTO messaging_message (direction, contact_id, sender_id, template_id, channel, to_address,
                from_address, body, content_sid, content_variables, render_context, num_media, media, status,
                skip_reason, provider_sid, error_code, error_message, segments, encoding, price_unit,
                attempts, created_at, updated_at, sent_at, delivered_at)
            SELECT 'outbound', c.id, {sender.pk}, {template.pk}, 'sms', c.phone, '+447400000001', 'Hello', '',
                   '{{}}', '{{}}', 0, '[]', 'delivered', '', 'SM' || md5(c.id::text), '', '', 1, 'GSM-7', 'USD', 1,
                   now() - interval '3 days', now(), now() - interval '3 days', now() - interval '3 days'
            FROM audience_contact c""",
        f"""INSERT INTO campaigns_recipient (run_id, contact_id, state, reason, detail, message_id, created_at, sent_at)
            SELECT {run.pk}, m.contact_id, 'sent', '', '', m.id, m.created_at, m.sent_at FROM messaging_message m""",
        # Goal events already looked at, over the last week (no contact: nobody to attribute them to).
        f"""INSERT INTO campaigns_event (contact_id, contact_phone_hash, name, properties, occurred_at, received_at,
                idempotency_key, request_hash, status)
            SELECT NULL, '', 'order_placed', '{{}}', t, t, 'old-' || i, '', 'unknown_contact'
            FROM (SELECT i, now() - (i * interval '7 days' / {events}) AS t
                  FROM generate_series(1, {events}) AS i) AS s""",
        "INSERT INTO campaigns_attributioncheck (event_id, checked_at) SELECT id, now() FROM campaigns_event",
        # The backlog: one event per messaged contact, received two days ago, never looked at.
        """INSERT INTO campaigns_event (contact_id, contact_phone_hash, name, properties, occurred_at, received_at,
                idempotency_key, request_hash, status)
            SELECT c.id, '', 'order_placed', '{"value": 20, "currency": "EUR"}',
                   now() - interval '2 days' + c.id * interval '1 millisecond',
                   now() - interval '2 days' + c.id * interval '1 millisecond', 'new-' || c.id, '', 'matched'
            FROM audience_contact c""",
        "ANALYZE",
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    AttributionHorizon.objects.create(
        event_name="order_placed", checked_until=timezone.now() - timedelta(days=2, minutes=1)
    )
    return run.pk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=5_000)
    parser.add_argument("--database", default=DATABASE, help=f"database to create and drop (default {DATABASE})")
    args = parser.parse_args(argv)
    server = server_url("DATABASE_URL")
    setup_django(database_recreate(server, args.database))

    from django.db import connection, connections

    from campaigns.models import AttributionCheck, Conversion
    from campaigns.services.attribution import conversions_attribute

    started = time.perf_counter()
    run_id = fill(args.events, args.backlog)
    print(
        f"filled {args.events:,} checked events and {args.backlog:,} unchecked in "
        f"{time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    with connection.cursor() as cursor:
        no_horizon = []
        for _ in range(5):
            started = time.perf_counter()
            cursor.execute(NO_HORIZON_SQL)
            cursor.fetchall()
            no_horizon.append((time.perf_counter() - started) * 1000)
    sweeps, attributed = [], 0
    for _ in range(args.backlog // 1000 + 2):
        started = time.perf_counter()
        found = conversions_attribute()
        if found:
            sweeps.append((time.perf_counter() - started) * 1000)
        attributed += found
    idle = []
    for _ in range(10):
        started = time.perf_counter()
        conversions_attribute()
        idle.append((time.perf_counter() - started) * 1000)
    converted = Conversion.objects.filter(run_id=run_id).count()
    if attributed != args.backlog or converted != args.backlog:
        raise SystemExit(f"{attributed} attributed, {converted} conversion rows, for {args.backlog} backlog events")
    if AttributionCheck.objects.count() != args.events + args.backlog:
        raise SystemExit("some events were never looked at")
    connections.close_all()
    with psycopg.connect(database_url_named(server, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    print(
        json.dumps(
            {
                "bench": "attribution",
                "checked_events": args.events,
                "backlog": args.backlog,
                "attributed": attributed,
                "backlog_sweeps": len(sweeps),
                "backlog_sweep_max_ms": round(max(sweeps), 1),
                "idle_sweep_p50_ms": round(percentile(sorted(idle), 0.5), 1),
                "no_horizon_query_p50_ms": round(percentile(sorted(no_horizon), 0.5), 1),
                "conditions": "2 shared cores, other agents running",
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
