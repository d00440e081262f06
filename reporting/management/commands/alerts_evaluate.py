"""Evaluate the alert rules from outside Celery: a watchdog for when no worker or no beat is running.

celery-beat runs ``reporting.alerts_evaluate`` every 30 s in a worker, so "no worker" and "beat
stopped" cannot be noticed by that task alone. Run this from cron, a systemd timer or a
Kubernetes CronJob (``--every 60`` keeps it running); it delivers its alerts itself, since no
worker may be there to. Evaluating from two places is safe: state moves by conditional UPDATE
and each alert is recorded once.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from reporting.alerting.services import alerts_evaluate


class Command(BaseCommand):
    help = "Evaluate every enabled alert rule once (or every N seconds with --every)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--every", type=float, default=0, help="Repeat every N seconds until stopped.")
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            help="Seconds to wait before the first evaluation (lets workers started alongside come up).",
        )

    def handle(self, *args, every: float = 0, wait: float = 0, **options) -> None:
        time.sleep(wait)
        while True:
            events = alerts_evaluate(deliver_inline=True)
            if events or every <= 0:
                self.stdout.write(f"{len(events)} alert event(s) recorded")
            if every <= 0:
                return
            time.sleep(every)
