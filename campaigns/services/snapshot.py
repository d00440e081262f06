"""The recipient snapshot of a campaign run, and the dry run that predicts it.

Both run the same SELECT, the eligibility rule (``campaigns.services.eligibility``) over the
campaign's audience: every contact with the state it would get (pending, held until its local
quiet hours end, or skipped with a reason). A launch inserts it into Recipient rows with one
INSERT ... SELECT; a dry run groups it. Given the same ``now`` they agree by construction, and
neither loops over contacts in Python.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from django.db import connection

from campaigns.models import Campaign, RecipientState
from campaigns.services import arms, eligibility

# The SELECT (contact_id, state, reason, detail, release_at, arm) for a campaign at an instant.
Snapshot = eligibility.Statement


def snapshot_query(campaign: Campaign, now: dt.datetime) -> Snapshot:
    return eligibility.snapshot_statement(campaign, now)


def snapshot_insert(run_id: int, snapshot: Snapshot) -> dict[tuple[str, str], int]:
    """Insert the snapshot as the run's Recipient rows; returns counts by (state, reason).

    The experiment's arm sizes (eligible recipients by arm) go to the run in the same transaction.
    """
    params = eligibility.Params(snapshot.params)
    sql = f"""
        WITH inserted AS (
            INSERT INTO campaigns_recipient (run_id, contact_id, state, reason, detail, release_at, arm, created_at)
            SELECT {params.add("run_id", run_id)}, s.contact_id, s.state, s.reason, s.detail, s.release_at, s.arm, now()
            FROM ({snapshot.sql}) s
            ON CONFLICT (run_id, contact_id) WHERE event_id IS NULL DO NOTHING
            RETURNING state, reason, arm
        )
        SELECT state, reason, arm, count(*) FROM inserted GROUP BY state, reason, arm"""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    counts: Counter[tuple[str, str]] = Counter()
    sizes: Counter[str] = Counter()
    for state, reason, arm, count in rows:
        counts[(state, reason)] += count
        if (arm is not None or state == RecipientState.HELD) and arms.eligible(state, reason):
            sizes[arms.arm_key(arm)] += count
    if any(key != arms.WAITING for key in sizes):
        arms.sizes_add(run_id, sizes)
    return dict(counts)


ANALYZE_AFTER = 10_000  # recipients inserted at once that make the table's statistics stale


def recipients_analyze() -> None:
    """Refresh the planner's statistics of the recipients after a big snapshot.

    Autovacuum gets to it within a minute or so; until then the planner still thinks the run
    is small, and the dispatch and counting queries of its first batches scan the whole table.
    """
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE campaigns_recipient")


def snapshot_summary(snapshot: Snapshot) -> list[tuple[str, str, int, dt.datetime | None, dt.datetime | None]]:
    """Counts by (state, reason) with the earliest and latest release time, inserting nothing."""
    sql = f"""
        SELECT s.state, s.reason, count(*), min(s.release_at), max(s.release_at)
        FROM ({snapshot.sql}) s GROUP BY s.state, s.reason ORDER BY s.state, s.reason"""
    with connection.cursor() as cursor:
        cursor.execute(sql, snapshot.params)
        return cursor.fetchall()


def snapshot_sample(snapshot: Snapshot, limit: int) -> list[int]:
    """Ids of a few contacts that would be sent to (pending first, then held)."""
    params = eligibility.Params(snapshot.params)
    sending = params.add("sending", [RecipientState.PENDING, RecipientState.HELD])
    sql = f"""
        SELECT s.contact_id FROM ({snapshot.sql}) s
        WHERE s.state = ANY({sending})
        ORDER BY s.state DESC, s.contact_id LIMIT {params.add("limit", limit)}"""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]
