"""Time to deliver runs from when the request left for the provider (sending_at) to delivered_at.

It ran from sent_at, a callback's arrival. The counted delivery-time buckets of campaign messages
are recomputed with the new definition (``reporting.counters.DELIVERY_SECONDS_SQL``, frozen here)
over the status times messaging 0007 made consistent, and the per-run bucket counters rebuilt from
them, under the lock the recount takes so no concurrent sync is lost.
"""

from django.db import migrations

BUCKET = "CASE WHEN {d} < 999.5 THEN round({d}) ELSE round({d}, 2 - floor(log({d}))::int) END::bigint"


def recount(start: str) -> str:
    seconds = f"GREATEST(EXTRACT(EPOCH FROM m.delivered_at - {start}), 0)"
    return f"""
LOCK TABLE reporting_countedmessage, reporting_deliverytimecounter IN SHARE ROW EXCLUSIVE MODE;
UPDATE reporting_countedmessage AS c
SET deliver_seconds = n.seconds
FROM (
    SELECT m.id,
           CASE WHEN m.delivered_at IS NOT NULL AND {start} IS NOT NULL THEN {BUCKET.format(d=seconds)} END AS seconds
    FROM messaging_message m JOIN reporting_countedmessage c2 ON c2.message_id = m.id AND c2.run_id IS NOT NULL
) AS n
WHERE c.message_id = n.id AND c.deliver_seconds IS DISTINCT FROM n.seconds;
DELETE FROM reporting_deliverytimecounter;
INSERT INTO reporting_deliverytimecounter (run_id, campaign_id, seconds, count)
SELECT run_id, campaign_id, deliver_seconds, count(*) FROM reporting_countedmessage
WHERE run_id IS NOT NULL AND deliver_seconds IS NOT NULL
GROUP BY run_id, campaign_id, deliver_seconds;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0006_default_alert_rules_and_beat_schedule"),
        ("messaging", "0007_message_status_times_earliest_evidence"),
    ]

    operations = [
        migrations.RunSQL(recount("COALESCE(m.sending_at, m.sent_at)"), reverse_sql=recount("m.sent_at")),
    ]
