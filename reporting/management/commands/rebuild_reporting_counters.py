"""Rebuild reporting's counters from the raw rows (after a restore, a deploy that added counters, or a bug)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from reporting.counters import counters_recount


class Command(BaseCommand):
    help = "Rebuild reporting's counters (per-run, per-minute, contact totals) from messages, recipients and events."

    def add_arguments(self, parser):
        parser.add_argument("--run", type=int, action="append", help="Only this run (repeatable); all runs otherwise.")

    def handle(self, *args, run=None, **options):
        counters_recount(run)
        self.stdout.write(f"counters rebuilt for {'runs ' + ', '.join(map(str, run)) if run else 'every run'}")
