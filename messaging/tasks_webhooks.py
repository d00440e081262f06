"""The safety net of the status webhook: apply events that raced with their sid being saved."""

from __future__ import annotations

from celery import shared_task

from messaging.services.status import status_events_sweep


@shared_task(name="messaging.status_events_sweep", ignore_result=True)
def sweep_pending_status_events() -> int:
    return status_events_sweep(older_than_seconds=10)
