"""Fan-out benchmark: snapshot a campaign run over N contacts.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python -m bench.fanout --contacts 1000000

It recreates its own database (``bench_fanout``) on the server DATABASE_URL names,
fills it with N contacts (attributes, topics, time zones; 5 % opted out) and an
earlier run so the frequency cap has something to count, then launches a campaign
on a segment with three predicates (a numeric attribute, a topic, a relative
date) plus consent, quiet hours and the cap, and times the snapshot. The baseline,
measured in the same run, is a plain ``SELECT count(*)`` of the same segment: the
read every snapshot has to pay before writing anything. Before the launch, the snapshot's
SELECT (the dry run) is timed for that campaign and for the same campaign as an experiment
(three variants and a 10 % control group drawn by campaigns.services.arms' hash expression):
the cost of assigning arms in the statement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench._util import BASE_DIR, database_recreate, server_url

QUERY = 'age >= 30 AND topic = "promotions" AND signup_date after "180 days ago"'


def contacts_fill(cursor, n: int) -> None:
    cursor.execute(
        """
        INSERT INTO audience_contact (phone, channel, name, email, locale, timezone, attributes, consent_status,
                                      consent_updated_at, created_at, updated_at)
        SELECT '+2547' || lpad(i::text, 8, '0'),
               CASE WHEN i %% 3 = 0 THEN 'whatsapp' ELSE 'sms' END,
               'Contact ' || i, '', 'en',
               (ARRAY['Africa/Nairobi','Africa/Lagos','Europe/London','America/New_York','Asia/Kolkata',''])
                   [1 + i %% 6],
               jsonb_build_object(
                   'age', 16 + (i * 7919) %% 60,
                   'city', (ARRAY['Nairobi','Lagos','London','New York','Mumbai'])[1 + i %% 5],
                   'vip', i %% 10 = 0,
                   'lifetime_value', ((i * 31) %% 50000) / 100.0,
                   'signup_date', to_char(current_date - ((i * 13) %% 400)::int, 'YYYY-MM-DD')),
               CASE WHEN i %% 20 = 0 THEN 'opted_out' ELSE 'opted_in' END,
               now(), now() - ((i %% 700) || ' days')::interval, now()
        FROM generate_series(1::bigint, %s) AS i
        """,
        [n],
    )
    cursor.execute("INSERT INTO audience_topic (name, description, created_at) VALUES ('promotions', '', now())")
    cursor.execute(
        """INSERT INTO audience_contacttopic (contact_id, topic_id, created_at)
           SELECT c.id, t.id, now() FROM audience_contact c, audience_topic t WHERE c.id % 10 < 6"""
    )
    cursor.execute("ANALYZE")


def earlier_run(cursor, campaign_id: int) -> None:
    """Recipients of a run an hour ago (every 7th contact), so the cap has something to count."""
    cursor.execute(
        """INSERT INTO campaigns_campaignrun (campaign_id, scheduled_for, status, mps, total, pending, held,
                                             sending, sent, skipped, failed, unknown, skipped_by_reason, arm_sizes,
                                             started_at)
           VALUES (%s, now() - interval '1 hour', 'completed', 10, 0, 0, 0, 0, 0, 0, 0, 0, '{}', '{}', now())
           RETURNING id""",
        [campaign_id],
    )
    run_id = cursor.fetchone()[0]
    cursor.execute(
        """INSERT INTO campaigns_recipient (run_id, contact_id, state, reason, detail, created_at, sent_at)
           SELECT %s, id, 'sent', '', '', now() - interval '1 hour', now() - interval '1 hour'
           FROM audience_contact WHERE id %% 7 = 0""",
        [run_id],
    )
    cursor.execute("ANALYZE campaigns_recipient")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--database", default="bench_fanout")
    args = parser.parse_args(argv)

    database_url = database_recreate(server_url("DATABASE_URL"), args.database)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": server_url("REDIS_URL")}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    os.environ.update({"DATABASE_URL": env["DATABASE_URL"], "REDIS_URL": env["REDIS_URL"]})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import datetime as dt

    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone as django_timezone

    from campaigns import selectors, services
    from campaigns.models import Campaign, Variant
    from campaigns.services import snapshot
    from messaging.models import MessageTemplate, Sender

    started = time.perf_counter()
    with connection.cursor() as cursor:
        contacts_fill(cursor, args.contacts)
    fill_seconds = time.perf_counter() - started

    template = MessageTemplate.objects.create(
        name="bench", channel="sms", body="Hi {{ name }} in {{ attributes.city }}"
    )
    sender = Sender.objects.create(name="bench", channel="sms", kind="short_code", from_address="+447400000001")
    segment = services.segment_create(name="bench", query=QUERY)
    older = Campaign.objects.create(name="earlier", template=template, sender=sender)
    with connection.cursor() as cursor:
        earlier_run(cursor, older.pk)
    campaign = services.campaign_create(
        name="fanout",
        template=template,
        sender=sender,
        segment=segment,
        quiet_start=dt.time(21),
        quiet_end=dt.time(8),
        frequency_cap=1,
        frequency_window=dt.timedelta(days=1),
        validity=dt.timedelta(hours=12),
    )

    experiment = services.campaign_create(
        name="fanout-arms",
        template=template,
        sender=sender,
        segment=segment,
        quiet_start=dt.time(21),
        quiet_end=dt.time(8),
        frequency_cap=1,
        frequency_window=dt.timedelta(days=1),
        validity=dt.timedelta(hours=12),
        control_share=10,
    )
    for label, weight in (("A", 1), ("B", 1), ("C", 2)):
        Variant.objects.create(campaign=experiment, label=label, template=template, weight=weight)
    dry_runs = {}
    for name, which in (("plain", campaign), ("arms", experiment)):
        dry_started = time.perf_counter()
        snapshot.snapshot_summary(snapshot.snapshot_query(which, django_timezone.now()))
        dry_runs[name] = time.perf_counter() - dry_started

    baseline_started = time.perf_counter()
    audience = selectors.segment_count(segment)
    baseline_seconds = time.perf_counter() - baseline_started

    launch_started = time.perf_counter()
    run = services.campaign_launch(campaign, actor="bench")
    seconds = time.perf_counter() - launch_started
    run.refresh_from_db()
    print(
        f"{args.contacts} contacts filled in {fill_seconds:.1f} s; segment {QUERY!r} matches {audience}; "
        f"run {run.pk}: {run.total} recipients ({run.pending} pending, {run.held} held, "
        f"skipped {run.skipped_by_reason}) "
        f"snapshotted in {seconds:.2f} s (snapshot statement {run.snapshot_seconds:.2f} s)"
    )
    assert run.total == audience, (run.total, audience)
    print(
        json.dumps(
            {
                "bench": "fanout",
                "contacts": args.contacts,
                "recipients": run.total,
                "seconds": round(seconds, 3),
                "held": run.held,
                "skipped": run.skipped,
                "baseline_count_seconds": round(baseline_seconds, 3),
                "ratio_to_count": round(seconds / baseline_seconds, 2) if baseline_seconds else None,
                "dry_run_seconds": round(dry_runs["plain"], 3),
                "arms_dry_run_seconds": round(dry_runs["arms"], 3),
                "arms_ratio": round(dry_runs["arms"] / dry_runs["plain"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
