"""How many contacts there are, and how many opted out: exact, from the deltas database triggers keep.

The triggers on audience_contact (migration 0004) append one row per writing statement to
``reporting_contacttotal``; reading sums them, and beat folds them into one row now and then.
"""

from __future__ import annotations

from django.db import connection


def contact_totals() -> tuple[int, int]:
    """(contacts, opted-out contacts), exact: the sum of the trigger-kept deltas."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(sum(contacts), 0), COALESCE(sum(opted_out), 0) FROM reporting_contacttotal")
        contacts, opted_out = cursor.fetchone()
    return int(contacts), int(opted_out)


def contact_totals_compact() -> None:
    """Fold the delta rows into one (concurrent writers keep inserting; none is lost or counted twice)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """WITH gone AS (DELETE FROM reporting_contacttotal RETURNING contacts, opted_out)
               INSERT INTO reporting_contacttotal (contacts, opted_out)
               SELECT COALESCE(sum(contacts), 0), COALESCE(sum(opted_out), 0) FROM gone"""
        )
