"""Celery tasks of reporting: each calls one function and is safe to run twice."""

from __future__ import annotations

from celery import shared_task

from reporting import counters


@shared_task(name="reporting.counters_sweep", ignore_result=True)
def counters_sweep() -> int:
    return counters.counters_sweep()
