"""Events as data: indexes for a contact's history and the latest events (the hourly retention purge is
scheduled by config/periodic.py).

- ``event_contact_received`` gains ``id`` (contact_id, received_at, id): a contact's history, the
  latest received first with id breaking ties (``GET /api/v1/contacts/{id}/events/``, the
  contact's admin page), is then read from it in order, 50 rows for a page whoever the contact.
  With (contact_id, received_at) only, the planner could walk ``event_received_id`` backwards and
  filter by contact, fast for a contact it guesses busy, a scan of every recent event for a busy
  contact gone quiet. Rebuilt under its name, so the model's declaration still names it.
- ``event_received_id`` (received_at, id) serves the latest events of all contacts (the events
  list's default order, in the API and the admin), which otherwise sorts the whole table. Rows
  arrive in received_at order, so it grows at its right edge like the primary key.
- Two indexes nothing reads go: the plain ``contact_id`` index of the foreign key
  (``event_contact_received`` starts with contact_id and serves the same lookups, a contact's
  history and erasure included) and the LIKE twin of ``idempotency_key`` (keys are only looked up
  whole). Each cost every insert a write into a large index keyed at random: at 10M events such
  an index costs about 5 KB of WAL an event and a fifth of the batch insert rate
  (bench.event_store). Django drops such indexes with IF EXISTS when it alters a field.

The indexes are access paths of selectors, not declared on the model (as messaging 0005's). They
are built and dropped CONCURRENTLY, so writes go on while they build on a large table; hence a
non-atomic migration. bench.event_store measures them at 10M events (docs/events.md).
"""

from django.db import migrations

NEW = (("event_received_id", "(received_at, id)"),)
# (contact_id, received_at) becomes (contact_id, received_at, id), keeping its name.
CONTACT_INDEX = [
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS event_contact_received_id ON campaigns_event (contact_id, received_at, id)",
    "DROP INDEX CONCURRENTLY IF EXISTS event_contact_received",
    "ALTER INDEX event_contact_received_id RENAME TO event_contact_received",
]
CONTACT_INDEX_BACK = [
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS event_contact_received_old ON campaigns_event (contact_id, received_at)",
    "DROP INDEX CONCURRENTLY IF EXISTS event_contact_received",
    "ALTER INDEX event_contact_received_old RENAME TO event_contact_received",
]
UNUSED = (
    ("campaigns_event_contact_id_6f9cb95f", "(contact_id)"),
    ("campaigns_event_idempotency_key_a4da2df2_like", "(idempotency_key varchar_pattern_ops)"),
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("campaigns", "0008_dispatch_upkeep_every_ten_seconds"),
    ]

    operations = [
        migrations.RunSQL(CONTACT_INDEX, CONTACT_INDEX_BACK),
        *(
            migrations.RunSQL(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON campaigns_event {columns}",
                f"DROP INDEX CONCURRENTLY IF EXISTS {name}",
            )
            for name, columns in NEW
        ),
        *(
            migrations.RunSQL(
                f"DROP INDEX CONCURRENTLY IF EXISTS {name}",
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON campaigns_event {columns}",
            )
            for name, columns in UNUSED
        ),
    ]
