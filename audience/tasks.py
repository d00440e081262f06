"""Background work of the audience app."""

from __future__ import annotations

import logging

from celery import shared_task

from audience import services as audience_services
from audience.ingest import services

logger = logging.getLogger(__name__)


@shared_task(name="audience.import_job_run", acks_late=True, ignore_result=True)
def import_job_run(job_id: int) -> str:
    """Run one import job; a second delivery finds the job claimed and does nothing."""
    job = services.import_job_claim(job_id)
    if job is None:
        logger.info("import job %s is not claimable (running elsewhere or finished)", job_id)
        return "not claimed"
    job = services.import_job_run(job)
    return job.status


@shared_task(name="audience.import_jobs_resume", ignore_result=True)
def import_jobs_resume() -> dict[str, int]:
    """Queue again the background imports whose worker died or whose message was lost (beat, every minute)."""
    return services.import_jobs_resume()


@shared_task(name="audience.import_errors_purge", ignore_result=True)
def import_errors_purge() -> int:
    """Delete import row problems past RETENTION_IMPORT_ERRORS_DAYS and uploaded import files past
    RETENTION_IMPORT_FILES_DAYS (beat, hourly); safe to run twice."""
    files = services.import_files_purge()
    if files:
        logger.info("removed %s uploaded import files past retention", files)
    return audience_services.import_errors_purge()
