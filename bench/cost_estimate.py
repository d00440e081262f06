"""Cost estimate benchmark: the dry run's estimate over N contacts.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python -m bench.cost_estimate --contacts 100000

It recreates its own database (``bench_cost``), fills it with N contacts (Kenyan, British and US
numbers; one name in ten with a character outside GSM-7, so UCS-2), a price table for two of the
three countries, and times the estimate of a personalised body (rendered per recipient, or a
sample past COST_ESTIMATE_RENDER_MAX, then every body rendered for the sample's error) and of a
fixed body (counted once, countries grouped). The baseline, measured in the same run, is the dry
run's own count of the snapshot (``snapshot_summary``): the query every dry run already paid.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench._util import BASE_DIR, database_recreate, server_url


def contacts_fill(cursor, n: int) -> None:
    cursor.execute(
        """
        INSERT INTO audience_contact (phone, channel, name, email, locale, timezone, attributes, consent_status,
                                      created_at, updated_at)
        SELECT CASE i %% 3 WHEN 0 THEN '+2547' || lpad(i::text, 8, '0')
                           WHEN 1 THEN '+4474' || lpad(i::text, 8, '0')
                           ELSE '+1212' || (2000000 + i)::text END,
               'sms',
               CASE WHEN i %% 10 = 0 THEN 'Zoë ' || i ELSE 'Contact number ' || i END, '', 'en', '',
               jsonb_build_object('city', (ARRAY['Nairobi','London','New York'])[1 + i %% 3]),
               'opted_in', now(), now()
        FROM generate_series(1::bigint, %s) AS i
        """,
        [n],
    )
    cursor.execute("ANALYZE")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--database", default="bench_cost")
    args = parser.parse_args(argv)

    database_url = database_recreate(server_url("DATABASE_URL"), args.database)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": server_url("REDIS_URL")}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    os.environ.update({"DATABASE_URL": env["DATABASE_URL"], "REDIS_URL": env["REDIS_URL"]})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from decimal import Decimal

    from django.db import connection
    from django.utils import timezone

    from campaigns.models import Campaign
    from campaigns.services import cost, snapshot
    from messaging.models import MessageTemplate, PriceTable, Sender

    with connection.cursor() as cursor:
        contacts_fill(cursor, args.contacts)
    for country, price in (("KE", "0.1290"), ("GB", "0.0524")):
        PriceTable.objects.create(
            country=country, channel="sms", price=Decimal(price), currency="USD", refreshed_at=timezone.now()
        )
    sender = Sender.objects.create(name="bench", channel="sms", kind="long_code", from_address="+447400000001")
    body = "Hi {{ name }}, our shop in {{ attributes.city }} opens on Saturday at 9. " + "Come early! " * 6
    personal = MessageTemplate.objects.create(name="personal", channel="sms", body=body)
    fixed = MessageTemplate.objects.create(name="fixed", channel="sms", body="Our shop opens on Saturday at 9.")
    campaigns = [Campaign.objects.create(name=t.name, template=t, sender=sender) for t in (personal, fixed)]

    now = timezone.now()
    started = time.perf_counter()
    snapshot.snapshot_summary(snapshot.snapshot_query(campaigns[0], now))
    baseline_seconds = time.perf_counter() - started
    figures = {}
    for campaign in campaigns:
        started = time.perf_counter()
        estimate = cost.snapshot_cost_estimate(campaign, snapshot.snapshot_query(campaign, now))
        figures[campaign.name] = (time.perf_counter() - started, estimate)
        print(f"{campaign.name}: {cost.cost_words(estimate)} in {figures[campaign.name][0]:.2f} s")
    from django.test import override_settings

    with override_settings(COST_ESTIMATE_RENDER_MAX=10 * args.contacts):
        started = time.perf_counter()
        exact = cost.snapshot_cost_estimate(campaigns[0], snapshot.snapshot_query(campaigns[0], now))
        exact_seconds = time.perf_counter() - started
    print(f"personal, every body rendered: {cost.cost_words(exact)} in {exact_seconds:.2f} s")
    sampled_units = figures["personal"][1]["units"]
    print(
        json.dumps(
            {
                "bench": "cost_estimate",
                "contacts": args.contacts,
                "personal_seconds": round(figures["personal"][0], 3),
                "fixed_seconds": round(figures["fixed"][0], 3),
                "personal_rendered": figures["personal"][1]["rendered"],
                "personal_units": sampled_units,
                "personal_exact_seconds": round(exact_seconds, 3),
                "personal_exact_units": exact["units"],
                "sample_units_error": round(abs(sampled_units - exact["units"]) / exact["units"], 4),
                "baseline_snapshot_count_seconds": round(baseline_seconds, 3),
                "personal_vs_baseline": round(figures["personal"][0] / max(baseline_seconds, 1e-9), 1),
                "fixed_vs_baseline": round(figures["fixed"][0] / max(baseline_seconds, 1e-9), 1),
                "conditions": "2-core machine shared with other agents; PostgreSQL and Redis on the same machine",
            }
        )
    )


if __name__ == "__main__":
    main()
