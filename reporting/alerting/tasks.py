"""Celery tasks of alerting: each calls one service and is safe to run twice."""

from __future__ import annotations

from celery import shared_task

from reporting.alerting import services

NOTIFY_MAX_RETRIES = 8


@shared_task(name="reporting.alerts_evaluate", ignore_result=True)
def alerts_evaluate() -> int:
    return len(services.alerts_evaluate())


@shared_task(name="reporting.alert_notify", bind=True, ignore_result=True, max_retries=NOTIFY_MAX_RETRIES)
def alert_notify(self, notice_id: int) -> None:
    """Deliver one alert notice; a channel that failed is retried with backoff, the others are not resent."""
    try:
        services.alert_notice_notify(notice_id)
    except services.NotifyFailed as exc:
        raise self.retry(exc=exc, countdown=min(15 * 2**self.request.retries, 900)) from None
