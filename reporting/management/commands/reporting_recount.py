"""Rebuild the message counters from messages and recipients (after a restore, or the first deploy)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from reporting.counters import counters_recount


class Command(BaseCommand):
    help = "Rebuild reporting's per-run message counters from the messages themselves."

    def add_arguments(self, parser):
        parser.add_argument("--run", type=int, action="append", help="Only this run (repeatable); all runs otherwise.")

    def handle(self, *args, run=None, **options):
        counters_recount(run)
        self.stdout.write(f"counters rebuilt for {'runs ' + ', '.join(map(str, run)) if run else 'every run'}")
