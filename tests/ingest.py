"""Helpers shared by the import tests: write a file, run it through the real engine."""

from __future__ import annotations

from pathlib import Path

from audience.ingest import services
from audience.models import ImportJob, ImportSource


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def ingest(path: Path, *, workers: int = 1, **options) -> ImportJob:
    """Create, claim and run a job on ``path`` with the real engine; raises ImportRejected like the doors do.

    The import states its contacts opted in unless ``default_consent`` says otherwise (None: it states nothing).
    """
    options.setdefault("default_consent", "opted_in")
    job = services.import_job_create(
        source=ImportSource.COMMAND, path=str(path), options=services.import_options_clean(**options), actor="tester"
    )
    claimed = services.import_job_claim(job.pk)
    assert claimed is not None
    return services.import_job_run(claimed, workers=workers)


def problems(job: ImportJob, level: str | None = None) -> list[tuple[int, str, str]]:
    rows = job.row_errors.order_by("line", "id")
    if level:
        rows = rows.filter(level=level)
    return list(rows.values_list("line", "column", "reason"))
