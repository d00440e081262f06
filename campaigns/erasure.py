"""An erased contact's waiting recipients are skipped, so no run waits for someone who is gone.

Events stored for the person's phone while no contact had it go too (their own events go with
the contact row).

Receiver of audience's ``contact_erasing`` (inside the erasure's transaction). The recipient rows
stay, anonymised, so the run's figures and reporting's counts do not change.
"""

from __future__ import annotations

from collections import Counter

from django.db import connection

from audience.phones import phone_hash
from campaigns.models import RecipientState, SkipReason
from campaigns.services.dispatch import run_counters_move

ERASED_DETAIL = "contact erased"


def contact_recipients_skip(*, contact_id: int, **kwargs) -> int:
    """Skip the contact's pending and held recipients with their runs' counters; returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH old AS (
                SELECT id, state FROM campaigns_recipient
                WHERE contact_id = %(contact)s AND state IN (%(pending)s, %(held)s) FOR UPDATE
            )
            UPDATE campaigns_recipient r
            SET state = %(skipped)s, reason = %(reason)s, detail = %(detail)s, release_at = NULL
            FROM old WHERE r.id = old.id AND r.state = old.state
            RETURNING r.run_id, old.state
            """,
            {
                "contact": contact_id,
                "pending": RecipientState.PENDING.value,
                "held": RecipientState.HELD.value,
                "skipped": RecipientState.SKIPPED.value,
                "reason": SkipReason.OPTED_OUT.value,
                "detail": ERASED_DETAIL,
            },
        )
        moved = Counter((run_id, state) for run_id, state in cursor.fetchall())
    # The run's counters move with the rows, in one UPDATE each (no read-modify-write).
    for (run_id, state), count in moved.items():
        run_counters_move(
            run_id, {RecipientState(state).value: -count, "skipped": count}, {SkipReason.OPTED_OUT: count}
        )
    return sum(moved.values())


def unknown_phone_events_erase(*, phone: str = "", **kwargs) -> int:
    """Delete the events kept for the erased person's phone before they were a contact (by its keyed hash)."""
    if not phone:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM campaigns_event WHERE contact_id IS NULL AND contact_phone_hash = %s", [phone_hash(phone)]
        )
        return cursor.rowcount
