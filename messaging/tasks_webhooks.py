"""The safety net of the status webhook: apply callbacks that raced with their sid being saved."""

from __future__ import annotations

from celery import shared_task

from messaging.services import status


@shared_task(name="messaging.status_callbacks_sweep", ignore_result=True)
def status_callbacks_sweep() -> int:
    return status.status_callbacks_sweep(older_than_seconds=10)
