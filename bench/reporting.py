"""Reporting benchmark: the campaign summary, its experiment's arms and the dashboard over a campaign of N messages.

    python -m bench.reporting --messages 1000000 [--requests 40]

It creates its own database (``bench_reporting`` on the DATABASE_URL server), migrates it, and
fills one campaign run with N contacts, recipients and messages in realistic status proportions
(delivered, read, sent, undelivered and failed with Twilio error codes, in flight, skipped), with
prices, replies and opt-outs, all by INSERT ... SELECT, and sets the run's recipient counters.
The fill bypasses the services' signals, so every counter is rebuilt with
``manage.py rebuild_reporting_counters`` and checked: status counters against a recount, and the
whole summary from counters against the same summary computed by scanning (median bucketed,
exact here: delivery times are whole seconds). Then the summary and dashboard endpoints are timed
through Django's test client, and the naive figure, a plain GROUP BY over the run's messages, is
timed in the same run. The campaign is an experiment: two variants (weights 1 and 2) and a 10 %
control group, assigned by the snapshot's hash expression (campaigns.services.arms); the control
group's recipients are skipped 'control' without a message. The arms' counters are checked
against a GROUP BY over the messages, their conversions against a GROUP BY over the conversion
rows, and the arms endpoint is timed with its naive figure (those two GROUP BYs). 2 % of the
recipients, the control group's included, converted: the summary's conversions are checked
against the conversion rows of messaged recipients, and the control group's are reported.
The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench._util import database_recreate, database_url_named, percentile, server_url

DATABASE = "bench_reporting"

# (upper bound of i % 100, status, error code): realistic end states of a finished run.
MIX = [
    (50, "delivered", ""),
    (70, "read", ""),
    (77, "sent", ""),
    (83, "undelivered", "30003"),
    (87, "failed", "30007"),
    (89, "failed", "21610"),
    (90, "failed", "63016"),
    (95, "queued", ""),
    (100, "skipped", ""),
]
# The opt-outs of the STOP replies, as audience.consent_chain.consent_events_insert writes events.
STOP_EVENTS = """
    SELECT i.contact_id, md5(i.from_address)::varchar AS phone_hash, 'change' AS kind, 'opted_in' AS from_status,
           'opted_out' AS to_status, 'keyword' AS source, 'bench' AS actor, '{}'::jsonb AS evidence, i.created_at,
           row_number() OVER (ORDER BY i.id) AS position
    FROM messaging_message i WHERE i.direction = 'inbound' AND i.body = 'STOP'"""


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "true")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


CONTROL_SHARE = 10


def fill(messages: int) -> tuple[int, int]:
    # Contacts enough that, once the control group's messages are gone, about ``messages`` remain.
    n = round(messages * 100 / (100 - CONTROL_SHARE))
    from django.db import connection, transaction

    from audience.consent_chain import consent_events_insert
    from campaigns.models import Campaign, CampaignRun, Variant
    from campaigns.services import arms
    from messaging.models import MessageTemplate, Sender

    template = MessageTemplate.objects.create(name="bench", channel="sms", body="Hello {{ name }}")
    sender = Sender.objects.create(name="bench", channel="sms", kind="long_code", from_address="+447400000001")
    campaign = Campaign.objects.create(
        name="bench", template=template, sender=sender, status="running", control_share=CONTROL_SHARE
    )
    for label, weight in (("A", 1), ("B", 2)):
        Variant.objects.create(campaign=campaign, label=label, template=template, weight=weight)
    run = CampaignRun.objects.create(campaign=campaign, scheduled_for="2026-11-20T09:00Z", mps=100, total=n)
    arm = arms.arm_sql(campaign, "a.contact_id")
    case_status = " ".join(f"WHEN c.id % 100 < {bound} THEN '{status}'" for bound, status, _ in MIX)
    case_code = " ".join(f"WHEN c.id % 100 < {bound} THEN '{code}'" for bound, _, code in MIX)
    # Sent over the last half hour, so the dashboard's windows see a live run.
    t0 = "(now() - interval '30 minutes')"
    statements = [
        f"""INSERT INTO audience_contact (phone, channel, name, email, locale, timezone, attributes, consent_status,
                created_at, updated_at)
            SELECT '+2547' || lpad(i::text, 8, '0'), 'sms', '', '', 'en', '', '{{}}',
                   CASE WHEN i % 200 = 0 THEN 'opted_out' ELSE 'opted_in' END, now(), now()
            FROM generate_series(1, {n}) AS i""",
        f"""INSERT INTO messaging_message (direction, contact_id, sender_id, template_id, channel, to_address,
                from_address, body, content_sid, content_variables, render_context, num_media, media, status,
                skip_reason, provider_sid, error_code, error_message, segments, encoding, price, price_unit,
                attempts, created_at, updated_at, sent_at, delivered_at, read_at, failed_at)
            SELECT 'outbound', s.id, {sender.pk}, {template.pk}, 'sms', s.phone, '+447400000001', 'Hello', '',
                   '{{}}', '{{}}', 0, '[]', s.status, '', 'SM' || md5(s.id::text), s.code, '', 1, 'GSM-7',
                   CASE WHEN s.status IN ('queued', 'skipped') THEN NULL ELSE -0.0075 END, 'USD', 1,
                   {t0} + (s.i * interval '1 millisecond'), now(),
                   CASE WHEN s.status IN ('sent', 'delivered', 'read', 'undelivered')
                        THEN {t0} + (s.i * interval '1 millisecond') END,
                   CASE WHEN s.status IN ('delivered', 'read')
                        THEN {t0} + (s.i * interval '1 millisecond') + (s.i % 30) * interval '1 second' END,
                   CASE WHEN s.status = 'read' THEN {t0} + (s.i * interval '1 millisecond') + interval '5 minutes' END,
                   CASE WHEN s.status IN ('failed', 'undelivered') THEN {t0} + (s.i * interval '1 millisecond') END
            FROM (SELECT c.id, c.id AS i, c.phone, CASE {case_status} END AS status,
                         CASE {case_code} END AS code
                  FROM audience_contact c) AS s""",
        f"""INSERT INTO campaigns_recipient (run_id, contact_id, state, reason, detail, message_id, created_at, sent_at)
            SELECT {run.pk}, m.contact_id,
                   CASE WHEN m.status = 'skipped' THEN 'skipped' WHEN m.status = 'failed' THEN 'failed'
                        ELSE 'sent' END,
                   CASE WHEN m.status = 'skipped' THEN 'opted_out' ELSE '' END, '', m.id, m.created_at, m.sent_at
            FROM messaging_message m""",
        """INSERT INTO messaging_message (direction, contact_id, channel, to_address, from_address, body, content_sid,
                content_variables, render_context, num_media, media, status, skip_reason, error_code, error_message,
                encoding, price_unit, attempts, created_at, updated_at, received_at)
            SELECT 'inbound', m.contact_id, 'sms', '+447400000001', m.to_address,
                   CASE WHEN m.id % 3 = 0 THEN 'STOP' ELSE 'Thanks!' END, '', '{}', '{}', 0, '[]', 'received',
                   '', '', '', '', '', 0, m.delivered_at + interval '1 hour', now(), m.delivered_at + interval '1 hour'
            FROM messaging_message m WHERE m.direction = 'outbound' AND m.delivered_at IS NOT NULL AND m.id % 50 = 0""",
        # The experiment's arms, as the snapshot draws them; the control group is sent nothing.
        (
            f"""UPDATE campaigns_recipient r SET arm = x.arm
                FROM (SELECT a.id, {arm.expression} AS arm FROM campaigns_recipient a {arm.join}
                      WHERE a.run_id = {run.pk}) AS x
                WHERE r.id = x.id""",
            [*arm.params, *arm.join_params],
        ),
        f"""WITH control AS (
                UPDATE campaigns_recipient SET state = 'skipped', reason = 'control', message_id = NULL, sent_at = NULL
                WHERE run_id = {run.pk} AND arm = {arms.CONTROL_ARM} RETURNING contact_id
            )
            DELETE FROM messaging_message m USING control
            WHERE m.contact_id = control.contact_id AND m.direction = 'outbound'""",
        f"""UPDATE campaigns_campaignrun SET arm_sizes = (
                SELECT jsonb_object_agg(arm::text, n) FROM (
                    SELECT arm, count(*) AS n FROM campaigns_recipient
                    WHERE run_id = {run.pk} AND (state <> 'skipped' OR reason = 'control') GROUP BY arm) AS a)
            WHERE id = {run.pk}""",
        # Goal conversions, as attribution records them: 2 % of the messaged recipients and of the
        # control group (measured without a message), with a value.
        f"""INSERT INTO campaigns_conversion (event_id, campaign_id, run_id, recipient_id, message_id, contact_id,
                model, event_name, occurred_at, touched_at, value, currency)
            SELECT r.id, {campaign.pk}, r.run_id, r.id, r.message_id, r.contact_id, 'last_message', 'order_placed',
                   COALESCE(r.sent_at, r.created_at) + interval '2 hours', COALESCE(r.sent_at, r.created_at),
                   (r.id % 90) + 10, 'USD'
            FROM campaigns_recipient r
            WHERE r.run_id = {run.pk} AND r.id % 50 = 7 AND (r.message_id IS NOT NULL OR r.reason = 'control')""",
        # The run's recipient counters, as the snapshot and the dispatcher keep them.
        f"""UPDATE campaigns_campaignrun run SET total = c.total, pending = c.pending, held = c.held,
                sending = c.sending, sent = c.sent, skipped = c.skipped, failed = c.failed,
                skipped_by_reason = c.reasons
            FROM (SELECT count(*) AS total, count(*) FILTER (WHERE state = 'pending') AS pending,
                         count(*) FILTER (WHERE state = 'held') AS held,
                         count(*) FILTER (WHERE state = 'sending') AS sending,
                         count(*) FILTER (WHERE state = 'sent') AS sent,
                         count(*) FILTER (WHERE state = 'skipped') AS skipped,
                         count(*) FILTER (WHERE state = 'failed') AS failed,
                         jsonb_build_object(
                             'opted_out', count(*) FILTER (WHERE state = 'skipped' AND reason = 'opted_out'),
                             'control', count(*) FILTER (WHERE reason = 'control')) AS reasons
                  FROM campaigns_recipient WHERE run_id = {run.pk}) AS c
            WHERE run.id = {run.pk}""",
        "ANALYZE",
    ]
    with connection.cursor() as cursor:
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, None)
            cursor.execute(sql, params)
    with transaction.atomic(), connection.cursor() as cursor:
        consent_events_insert(cursor, STOP_EVENTS)  # chained into the consent audit, as every writer does
        cursor.execute("ANALYZE audience_consentevent")
    return campaign.pk, run.pk


def time_requests(client, url: str, requests: int) -> list[float]:
    for _ in range(3):
        assert client.get(url).status_code == 200
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content[:500]
    return sorted(timings)


def naive_summary(run_id: int, requests: int) -> list[float]:
    from django.db import connection

    sql = """SELECT m.status, m.error_code, count(*), sum(m.price) FROM campaigns_recipient r
             JOIN messaging_message m ON m.id = r.message_id WHERE r.run_id = %s GROUP BY 1, 2"""
    timings = []
    with connection.cursor() as cursor:
        for _ in range(requests):
            started = time.perf_counter()
            cursor.execute(sql, [run_id])
            cursor.fetchall()
            timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)


ARMS_SCAN_SQL = """
    SELECT r.arm, count(m.id) FILTER (WHERE COALESCE(m.sent_at, m.delivered_at, m.read_at) IS NOT NULL),
           count(m.delivered_at), count(m.failed_at)
    FROM campaigns_recipient r JOIN messaging_message m ON m.id = r.message_id
    WHERE r.run_id = %s AND r.arm IS NOT NULL GROUP BY r.arm ORDER BY r.arm"""


def arms_checked(campaign, run_id: int) -> None:
    """The arms' funnel from counters equals a GROUP BY over the messages."""
    from django.db import connection

    from reporting.arms import campaign_arms

    with connection.cursor() as cursor:
        cursor.execute(ARMS_SCAN_SQL, [run_id])
        scanned = {str(arm): (sent, delivered, failed) for arm, sent, delivered, failed in cursor.fetchall()}
    kept = {row["arm"]: (row["sent"], row["delivered"], row["failed"]) for row in campaign_arms(campaign)["arms"]}
    kept.pop("control")
    if kept != scanned:
        raise SystemExit(f"the arms' counters differ from a scan: {kept} != {scanned}")
    from reporting.arm_conversions import arm_conversions_read, arm_conversions_scanned

    conversions_kept, conversions_scanned = arm_conversions_read([run_id]), arm_conversions_scanned([run_id])
    if conversions_kept != conversions_scanned:
        raise SystemExit(f"the arms' conversions differ from a scan: {conversions_kept} != {conversions_scanned}")
    served = {row["arm"]: row["conversions"] for row in campaign_arms(campaign)["arms"]}
    if sorted(served.values()) != sorted(n for n, _, _ in conversions_scanned.values()):
        raise SystemExit(f"the arms endpoint's conversions differ from a scan: {served} != {conversions_scanned}")


def naive_arms(run_id: int, requests: int) -> list[float]:
    """The arms' funnel and conversions as a scan would read them, per request."""
    from django.db import connection

    from reporting.arm_conversions import ARM_CONVERSIONS_SCAN_SQL

    timings = []
    with connection.cursor() as cursor:
        for _ in range(requests):
            started = time.perf_counter()
            cursor.execute(ARMS_SCAN_SQL, [run_id])
            cursor.fetchall()
            cursor.execute(ARM_CONVERSIONS_SCAN_SQL.format(where="AND c.run_id = %(run)s"), {"run": run_id})
            cursor.fetchall()
            timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--keep-db", action="store_true", help="leave the benchmark's database for inspection")
    parser.add_argument("--database", default=DATABASE, help=f"database to create and drop (default {DATABASE})")
    args = parser.parse_args(argv)
    server = server_url("DATABASE_URL")
    os.environ.setdefault("REDIS_URL", server_url("REDIS_URL"))
    setup_django(database_recreate(server, args.database))

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from campaigns.models import Campaign
    from reporting.counters import counters_read, counters_recounted
    from reporting.selectors import campaign_summary
    from reporting.summary_scanned import campaign_summary_scanned

    started = time.perf_counter()
    campaign_id, run_id = fill(args.messages)
    print(f"filled {args.messages:,} messages in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    # The fill wrote rows without the services' signals: rebuild every counter from them, as an
    # operator would after a restore (production keeps them up to date as statuses change).
    started = time.perf_counter()
    call_command("rebuild_reporting_counters", stdout=sys.stderr)
    print(f"counters rebuilt in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if counters_read([run_id]) != counters_recounted([run_id]):
        raise SystemExit("counters differ from a recount")
    campaign = Campaign.objects.get(pk=campaign_id)
    for bucket in ("hour", "minute"):
        kept, scanned = campaign_summary(campaign, bucket=bucket), campaign_summary_scanned(campaign, bucket=bucket)
        if kept != scanned:
            differ = sorted(k for k in kept if kept[k] != scanned.get(k))
            raise SystemExit(f"the summary from counters differs from a scan in {differ}")
    print("summary from counters equals the scanned summary", file=sys.stderr)
    arms_checked(campaign, run_id)
    print("arms from counters equal the scanned arms", file=sys.stderr)
    from messaging.models import Message

    outbound = Message.objects.filter(direction="outbound").count()

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-pass-123")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    summary = time_requests(client, f"/api/v1/reporting/campaigns/{campaign_id}/summary", args.requests)
    arms_timings = time_requests(client, f"/api/v1/reporting/campaigns/{campaign_id}/arms", args.requests)
    dashboard = time_requests(client, "/api/v1/monitoring/dashboard", args.requests)
    naive = naive_summary(run_id, args.requests)
    naive_arms_timings = naive_arms(run_id, args.requests)
    from campaigns.models import Conversion

    converted = Conversion.objects.filter(run_id=run_id, message__isnull=False).count()
    summary_conversions = client.get(f"/api/v1/reporting/campaigns/{campaign_id}/summary").json()["conversions"]
    if summary_conversions["count"] != converted:
        raise SystemExit(f"summary conversions {summary_conversions['count']} != {converted} conversion rows")
    arm_rows = client.get(f"/api/v1/reporting/campaigns/{campaign_id}/arms").json()["arms"]
    control_conversions = sum(row["conversions"] or 0 for row in arm_rows if row["control"])

    from django.db import connections

    connections.close_all()
    if not args.keep_db:
        import psycopg

        with psycopg.connect(database_url_named(server, "postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    result = {
        "bench": "reporting",
        "messages": outbound,
        "summary_p95_ms": round(percentile(summary, 0.95), 1),
        "dashboard_p95_ms": round(percentile(dashboard, 0.95), 1),
        "naive_summary_p95_ms": round(percentile(naive, 0.95), 1),
        "arms_p95_ms": round(percentile(arms_timings, 0.95), 1),
        "naive_arms_p95_ms": round(percentile(naive_arms_timings, 0.95), 1),
        "summary_target_ms": 50,
        "summary_p50_ms": round(percentile(summary, 0.5), 1),
        "dashboard_p50_ms": round(percentile(dashboard, 0.5), 1),
        "arms_p50_ms": round(percentile(arms_timings, 0.5), 1),
        "conversions": converted,
        "control_conversions": control_conversions,
        "arms": "2 variants (1:2) and a 10 % control group; 2 % of recipients converted",
        "conditions": "2 shared cores, other agents running; figures noisy, compare with the naive ones",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
