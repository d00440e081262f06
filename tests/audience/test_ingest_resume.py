"""Background imports left behind (a worker died, a task message was lost) are queued again by beat."""

import datetime as dt
import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from audience.ingest import services
from audience.models import Contact, ImportJob, ImportSource, ImportStatus
from audience.tasks import import_job_run
from config.celery import app as celery_app

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]

ROWS = "phone,name\n" + "".join(f"+2547123{index:05d},Person {index}\n" for index in range(30))


def queued_job(source=ImportSource.API) -> ImportJob:
    upload = SimpleUploadedFile("list.csv", ROWS.encode(), content_type="text/csv")
    job = services.import_job_create(
        source=source, options=services.import_options_clean(default_consent="opted_in"), upload=upload
    )
    return services.import_job_enqueue(job)


def age(job: ImportJob, **delta) -> None:
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - dt.timedelta(**delta))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_job_whose_worker_died_is_queued_again_and_a_real_worker_finishes_it():
    job = queued_job()
    assert services.import_job_claim(job.pk) is not None  # a worker took it, then died
    # Celery gives the task out again at once: the heartbeat is still fresh, so that delivery ends.
    assert import_job_run(job.pk) == "not claimed"
    assert services.import_jobs_resume() == {"requeued": 0, "failed": 0}

    age(job, minutes=6)
    # The worker that died had taken the task's message with it: nothing is left in the queue.
    celery_app.control.purge()
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        assert services.import_jobs_resume() == {"requeued": 1, "failed": 0}
        deadline = time.monotonic() + 30
        while not (job := ImportJob.objects.get(pk=job.pk)).is_finished and time.monotonic() < deadline:
            time.sleep(0.2)
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert (job.created_count, job.attempts) == (30, 2)
    assert Contact.objects.count() == 30


def test_a_resumed_job_is_queued_once_per_interval(django_capture_on_commit_callbacks):
    job = queued_job()
    services.import_job_claim(job.pk)
    age(job, minutes=6)
    with django_capture_on_commit_callbacks() as queued:
        assert services.import_jobs_resume() == {"requeued": 1, "failed": 0}
        assert services.import_jobs_resume() == {"requeued": 0, "failed": 0}
    assert len(queued) == 1  # import_job_run.delay, after commit
    assert ImportJob.objects.get(pk=job.pk).status == ImportStatus.QUEUED


def test_a_queued_job_whose_message_was_lost_is_queued_again(django_capture_on_commit_callbacks):
    job = queued_job()
    age(job, minutes=9)
    assert services.import_jobs_resume()["requeued"] == 0  # a busy worker may still take it
    age(job, minutes=11)
    with django_capture_on_commit_callbacks() as queued:
        assert services.import_jobs_resume()["requeued"] == 1
    assert len(queued) == 1
    job.refresh_from_db()
    assert job.heartbeat_at > timezone.now() - dt.timedelta(minutes=1)


def test_a_job_that_kept_killing_its_worker_is_failed_not_started_again():
    job = queued_job()
    services.import_job_claim(job.pk)
    ImportJob.objects.filter(pk=job.pk).update(attempts=services.MAX_ATTEMPTS)
    age(job, minutes=6)
    assert services.import_jobs_resume() == {"requeued": 0, "failed": 1}
    job.refresh_from_db()
    assert job.status == ImportStatus.FAILED
    assert f"stopped {services.MAX_ATTEMPTS} times" in job.error and "re-run" in job.error
    services.import_job_retry(job)  # staff can still run it again
    assert ImportJob.objects.get(pk=job.pk).status == ImportStatus.QUEUED


def test_a_pending_or_command_job_is_left_alone(tmp_path):
    pending = services.import_job_create(
        source=ImportSource.ADMIN,
        options=services.import_options_clean(default_consent="opted_in"),
        upload=SimpleUploadedFile("preview.csv", ROWS.encode()),
    )
    ImportJob.objects.filter(pk=pending.pk).update(created_at=timezone.now() - dt.timedelta(hours=1))
    path = tmp_path / "cli.csv"
    path.write_text(ROWS)
    command = services.import_job_create(
        source=ImportSource.COMMAND, options=services.import_options_clean(default_consent="opted_in"), path=str(path)
    )
    services.import_job_claim(command.pk)  # the command was stopped (Ctrl-C) mid-run
    age(command, hours=1)
    assert services.import_jobs_resume() == {"requeued": 0, "failed": 0}
    statuses = dict(ImportJob.objects.values_list("pk", "status"))
    assert statuses == {pending.pk: ImportStatus.PENDING, command.pk: ImportStatus.RUNNING}
