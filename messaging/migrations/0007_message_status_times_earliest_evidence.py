"""Status times follow the statuses' meaning: each is the earliest evidence, in status order.

Callbacks used to stamp each status with its own arrival, so a "delivered" arriving before "sent"
left delivered_at earlier than sent_at. The rule the status service now keeps (a status implies
the earlier ones; each time is the earliest evidence) applied to existing rows: queued_at <=
sent_at <= delivered_at <= read_at, an undelivered message counted as sent by its failure at the
latest. Rows it changes get a new updated_at, so the reporting sweep recounts them.
"""

from django.db import migrations

FORWARD = """
UPDATE messaging_message AS m
SET queued_at = f.queued_at, sent_at = f.sent_at, delivered_at = f.delivered_at, updated_at = now()
FROM (
    SELECT id,
           LEAST(queued_at, sent_at, delivered_at, read_at, u) AS queued_at,
           LEAST(sent_at, delivered_at, read_at, u) AS sent_at,
           LEAST(delivered_at, read_at) AS delivered_at
    FROM messaging_message
    CROSS JOIN LATERAL (SELECT CASE WHEN status = 'undelivered' THEN failed_at END AS u) AS undelivered
    WHERE direction = 'outbound'
      AND (sent_at IS NOT NULL OR delivered_at IS NOT NULL OR read_at IS NOT NULL OR status = 'undelivered')
) AS f
WHERE m.id = f.id
  AND (m.queued_at, m.sent_at, m.delivered_at) IS DISTINCT FROM (f.queued_at, f.sent_at, f.delivered_at)
"""


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0006_message_fewer_indexes"),
    ]

    # Not reversible in data (the arrival-ordered times are gone), harmless to leave in place.
    operations = [migrations.RunSQL(FORWARD, reverse_sql=migrations.RunSQL.noop)]
