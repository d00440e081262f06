"""The former name of ``rebuild_reporting_counters``, kept for scripts that call it."""

from reporting.management.commands.rebuild_reporting_counters import Command as RebuildCommand


class Command(RebuildCommand):
    pass
