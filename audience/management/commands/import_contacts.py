"""Import contacts from a CSV, JSON array or JSON Lines file, in this process, with a progress bar."""

from __future__ import annotations

import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from audience.ingest import selectors, services
from audience.ingest.services import NO_CONSENT_COLUMN
from audience.models import ConsentStatus, ImportJob, ImportSource, ImportStatus


class Command(BaseCommand):
    help = "Import contacts through the ingest engine (the same one as the admin and the API)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV (any common delimiter), JSON array or JSONL file")
        parser.add_argument(
            "--default-consent",
            choices=ConsentStatus.values,
            help="the consent of new contacts whose row gives none; required for a CSV without a consent column",
        )
        parser.add_argument("--topic", default="", help="a topic added to every imported contact")
        parser.add_argument(
            "--default-country",
            default=None,
            help="the country (ISO code, e.g. KE) of numbers written without a country code; "
            "default: the PHONE_DEFAULT_COUNTRY setting",
        )
        parser.add_argument("--skip-existing", action="store_true", help="leave existing contacts untouched")
        parser.add_argument("--workers", type=int, default=0, help="validation processes (default: one per core)")
        parser.add_argument("--errors", type=int, default=20, help="how many row problems to print")

    def handle(
        self,
        *args,
        file: str,
        default_consent: str | None,
        topic: str,
        skip_existing: bool,
        default_country: str | None,
        **options,
    ):
        if not os.path.isfile(file):
            raise CommandError(f"{file}: no such file")
        try:
            job_options = services.import_options_clean(
                default_consent=default_consent,
                topic=topic,
                update_existing=not skip_existing,
                default_country=default_country,
            )
            job = services.import_job_create(source=ImportSource.COMMAND, path=file, options=job_options)
        except ValidationError as exc:
            if "default_consent" in getattr(exc, "error_dict", {}):
                raise CommandError(f"--default-consent is required: {NO_CONSENT_COLUMN}") from None
            if "default_country" in getattr(exc, "error_dict", {}):
                raise CommandError(f"--default-country: {exc.message_dict['default_country'][0]}") from None
            raise CommandError("; ".join(exc.messages)) from None
        job = services.import_job_claim(job.pk)
        with tqdm(total=100, unit="%", desc="import", disable=options["verbosity"] == 0) as bar:

            def on_progress(current: ImportJob) -> None:
                bar.set_postfix_str(f"{current.stage}, {current.total_rows:,} rows")
                bar.update(max(0.0, round(current.progress, 1) - bar.n))

            job = services.import_job_run(job, on_progress=on_progress, workers=options["workers"])
        self._report(job, options["errors"])
        if job.status == ImportStatus.FAILED:
            raise CommandError(job.error)

    def _report(self, job: ImportJob, shown: int) -> None:
        self.stdout.write(
            f"import #{job.pk} {job.status}: {job.total_rows:,} rows, {job.created_count:,} created, "
            f"{job.updated_count:,} updated, {job.unchanged_count:,} unchanged, {job.skipped_count:,} skipped, "
            f"{job.invalid_count:,} invalid, {job.duplicate_count:,} duplicates, {job.warning_count:,} warnings"
        )
        for note in (job.details or {}).get("notes", []):
            self.stdout.write(f"  note: {note}")
        for problem in selectors.import_job_errors(job)[:shown]:
            column = f", column {problem.column!r}" if problem.column else ""
            self.stdout.write(f"  line {problem.line}{column}: {problem.level}: {problem.reason}")
