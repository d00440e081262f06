"""Celery tasks of reporting: each calls one function and is safe to run twice."""

from __future__ import annotations

from celery import shared_task

from reporting import contact_totals, counters, monitoring


@shared_task(name="reporting.counters_sweep", ignore_result=True)
def counters_sweep() -> int:
    changed = counters.counters_sweep()
    contact_totals.contact_totals_compact()
    return changed


@shared_task(name="reporting.monitoring_refresh", ignore_result=True)
def monitoring_refresh() -> None:
    monitoring.monitoring_refresh()
