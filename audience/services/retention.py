"""What the audience keeps for a while only: imports' row problems."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

IMPORT_ERRORS_MAX_BATCHES = 200  # a purge run stops after this many batches; the next goes on


def import_errors_purge(*, days: int | None = None, batch_size: int | None = None) -> int:
    """Delete row problems of imports finished more than ``days`` ago (0: keep forever).

    Each batch is its own short transaction (``FOR UPDATE SKIP LOCKED``); returns rows deleted.
    """
    days = settings.RETENTION_IMPORT_ERRORS_DAYS if days is None else days
    if days <= 0:
        return 0
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    cutoff = timezone.now() - timedelta(days=days)
    total = 0
    for _ in range(IMPORT_ERRORS_MAX_BATCHES):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                """
                DELETE FROM audience_importrowerror WHERE id IN (
                    SELECT e.id FROM audience_importrowerror e
                    JOIN audience_importjob j ON j.id = e.job_id
                    WHERE j.finished_at < %(cutoff)s
                    LIMIT %(batch_size)s FOR UPDATE OF e SKIP LOCKED
                )
                """,
                {"cutoff": cutoff, "batch_size": batch_size},
            )
            done = cursor.rowcount
        total += done
        if done < batch_size:
            break
    return total
