"""Walk the consent audit's hash chain and report every event edited, inserted or deleted (exit code 1)."""

from __future__ import annotations

import re

from django.core.management.base import BaseCommand, CommandError

from audience.consent_chain import consent_chain_verify

HEAD = re.compile(r"^(\d+):([0-9a-fA-F]{64})$")


def _head(value: str) -> tuple[int, bytes]:
    match = HEAD.match(value.strip())
    if not match:
        raise CommandError(f"--expect-head {value!r}: give POSITION:HASH as this command printed it (64 hex digits)")
    return int(match[1]), bytes.fromhex(match[2])


class Command(BaseCommand):
    help = (
        "Verify the consent audit: every event sealed to the one before it, none edited, inserted or deleted. "
        "Prints the chain's head; keep it, and pass it as --expect-head later to detect events removed from the end."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--expect-head",
            metavar="POSITION:HASH",
            help="a head printed by an earlier run: the chain must still hold that event, unchanged",
        )

    def handle(self, *args, expect_head: str | None = None, **options):
        report = consent_chain_verify(expect_head=_head(expect_head) if expect_head else None)
        for problem in report.problems:
            self.stderr.write(f"consent audit: {problem}")
        head = f"{report.head_seq}:{report.head_hash.hex()}"
        if not report.ok:
            raise CommandError(
                f"the consent audit chain is broken: {len(report.problems)} problem(s) in {report.events} events "
                f"(head {head})",
                returncode=1,
            )
        erased = f", {report.erased} with personal data erased as recorded" if report.erased else ""
        self.stdout.write(f"consent audit chain intact: {report.events} events{erased}; head {head}")
