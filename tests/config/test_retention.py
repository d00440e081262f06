"""Retention: old raw payloads, inbound bodies and import row problems are purged in batches."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from audience import services as audience
from audience.ingest import services as ingest
from audience.models import ImportJob, ImportRowError
from messaging import retention
from messaging.models import Direction, Message, ProviderCallback

pytestmark = pytest.mark.django_db

OLD = timezone.now() - timedelta(days=400)


def _event(n: int, received_at, payload=None) -> ProviderCallback:
    event = ProviderCallback.objects.create(
        kind="status", provider_sid=f"SM{n:032x}", status="delivered", payload=payload or {"To": "+254712345678"}
    )
    ProviderCallback.objects.filter(pk=event.pk).update(received_at=received_at)
    return event


def _inbound(n: int, created_at, body="my address is 12 Main St") -> Message:
    message = Message.objects.create(
        direction=Direction.INBOUND,
        channel="sms",
        status="received",
        provider_sid=f"SM{n:032x}",
        body=body,
        media=[{"url": "https://api.twilio.com/m/1", "content_type": "image/jpeg"}],
        num_media=1,
    )
    Message.objects.filter(pk=message.pk).update(created_at=created_at)
    return message


def test_old_webhook_payloads_are_emptied_in_batches_and_recent_ones_kept(settings):
    settings.RETENTION_WEBHOOK_PAYLOAD_DAYS = 30
    old = [_event(n, OLD) for n in range(7)]
    recent = _event(99, timezone.now())
    assert retention.webhook_payloads_purge(batch_size=3) == 7  # three batches: 3, 3, 1
    assert all(ProviderCallback.objects.get(pk=e.pk).payload == {} for e in old)
    assert ProviderCallback.objects.get(pk=recent.pk).payload == {"To": "+254712345678"}
    assert ProviderCallback.objects.count() == 8  # the rows stay: they deduplicate callbacks
    assert retention.webhook_payloads_purge(batch_size=3) == 0  # idempotent


def test_old_inbound_bodies_are_blanked_and_outbound_messages_untouched(settings):
    settings.RETENTION_INBOUND_BODY_DAYS = 90
    old = _inbound(1, OLD)
    recent = _inbound(2, timezone.now())
    outbound = Message.objects.create(direction=Direction.OUTBOUND, channel="sms", body="Hello")
    Message.objects.filter(pk=outbound.pk).update(created_at=OLD)
    assert retention.inbound_bodies_purge() == 1
    old.refresh_from_db()
    assert (old.body, old.media, old.num_media, old.status) == ("", [], 0, "received")
    assert Message.objects.get(pk=recent.pk).body == "my address is 12 Main St"
    assert Message.objects.get(pk=outbound.pk).body == "Hello"
    assert retention.inbound_bodies_purge() == 0


def test_zero_days_keeps_everything(settings):
    settings.RETENTION_WEBHOOK_PAYLOAD_DAYS = 0
    settings.RETENTION_INBOUND_BODY_DAYS = 0
    _event(1, OLD)
    _inbound(2, OLD)
    assert retention.retention_purge() == {"webhook_payloads": 0, "inbound_bodies": 0}
    assert ProviderCallback.objects.get().payload != {}


def test_import_row_problems_of_old_finished_jobs_are_deleted(settings):
    settings.RETENTION_IMPORT_ERRORS_DAYS = 30
    old_job = ImportJob.objects.create(source="api", file_path="a", file_name="a.csv", finished_at=OLD)
    new_job = ImportJob.objects.create(source="api", file_path="b", file_name="b.csv", finished_at=timezone.now())
    running = ImportJob.objects.create(source="api", file_path="c", file_name="c.csv")
    for job in (old_job, new_job, running):
        ImportRowError.objects.bulk_create(
            [ImportRowError(job=job, line=n, reason="bad phone", value="07123") for n in range(5)]
        )
    assert audience.import_errors_purge(batch_size=2) == 5
    assert not ImportRowError.objects.filter(job=old_job).exists()
    assert ImportRowError.objects.filter(job__in=[new_job, running]).count() == 10
    assert audience.import_errors_purge(batch_size=2) == 0


def test_uploaded_import_files_are_deleted_after_retention_and_their_jobs_cannot_rerun(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.RETENTION_IMPORT_FILES_DAYS = 7
    (tmp_path / "imports").mkdir()
    own_file = tmp_path / "mine.csv"

    def job(name, **fields):
        relative = f"imports/{name}.csv"
        (tmp_path / relative).write_text("phone\n+254712345678\n")
        return ImportJob.objects.create(source="api", file_path=relative, file_name=f"{name}.csv", **fields)

    done_long_ago = job("old", status="succeeded", finished_at=OLD)
    failed_long_ago = job("failed", status="failed", finished_at=OLD)
    recent = job("recent", status="succeeded", finished_at=timezone.now())
    running = job("running", status="running")
    abandoned = job("abandoned", status="pending")
    ImportJob.objects.filter(pk=abandoned.pk).update(created_at=OLD)
    own_file.write_text("phone\n")
    command_job = ImportJob.objects.create(
        source="command", file_path=str(own_file), file_name="mine.csv", status="succeeded", finished_at=OLD
    )

    assert ingest.import_files_purge() == 3
    assert sorted(path.name for path in (tmp_path / "imports").iterdir()) == ["recent.csv", "running.csv"]
    assert own_file.exists()
    for gone in (done_long_ago, failed_long_ago, abandoned):
        gone.refresh_from_db()
        assert gone.file_path == ""
    command_job.refresh_from_db()
    assert command_job.file_path == str(own_file)
    running.refresh_from_db()
    assert running.file_path == "imports/running.csv"
    assert ingest.import_files_purge() == 0
    with pytest.raises(ingest.ImportRejected, match="removed after the retention period"):
        ingest.import_job_retry(failed_long_ago)
    with pytest.raises(ingest.ImportRejected, match="removed after the retention period"):
        ingest.import_job_confirm(abandoned)  # a preview never confirmed: nothing left to import
    settings.RETENTION_IMPORT_FILES_DAYS = 0
    ImportJob.objects.filter(pk=recent.pk).update(finished_at=OLD)
    assert ingest.import_files_purge() == 0


def test_the_purges_are_scheduled_by_beat():
    tasks = dict(PeriodicTask.objects.values_list("task", "interval__every"))
    assert tasks["messaging.retention_purge"] == 3600
    assert tasks["audience.import_errors_purge"] == 3600


@pytest.mark.django_db(transaction=True)
def test_a_locked_row_is_skipped_not_waited_for(settings):
    """SKIP LOCKED: a row another transaction holds is left for the next run."""
    settings.RETENTION_WEBHOOK_PAYLOAD_DAYS = 30
    held, free = _event(1, OLD), _event(2, OLD)
    locked, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            ProviderCallback.objects.select_for_update().get(pk=held.pk)
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert locked.wait(10)
        assert retention.webhook_payloads_purge() == 1
    finally:
        release.set()
        thread.join()
    assert ProviderCallback.objects.get(pk=free.pk).payload == {}
