"""The API door: POST /api/v1/contacts/import (202 + job), GET /api/v1/imports/{id}, the errors CSV."""

import csv
import io
import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.files.uploadedfile import SimpleUploadedFile

from audience.models import Contact, ImportJob, ImportStatus
from audience.tasks import import_job_run
from config.celery import app as celery_app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("roles", "media_root")]

CSV = b"phone,name,timezone\n+254712345678,Amina,Africa/Nairobi\n=cmd|' /C calc'!A0,x,\n+254712345679,Bob,Mars/Base\n"


def _upload(client, content=CSV, name="contacts.csv", **data):
    data.setdefault("default_consent", "opted_in")
    data = {key: value for key, value in data.items() if value is not None}
    return client.post(
        "/api/v1/contacts/import", {"file": SimpleUploadedFile(name, content), **data}, format="multipart"
    )


def test_staff_start_an_import_and_get_202_with_the_job(staff_api):
    response = _upload(staff_api, topic="api", default_consent="opted_out")
    assert response.status_code == 202, response.content
    body = response.json()
    job = ImportJob.objects.get(pk=body["id"])
    assert body["status"] == ImportStatus.QUEUED == job.status
    assert response["Location"].endswith(f"/api/v1/imports/{job.pk}")
    assert job.options == {
        "default_consent": "opted_out",
        "topic": "api",
        "update_existing": True,
        "default_country": "",
    }
    assert job.file_path.startswith("imports/") and job.file_name == "contacts.csv"
    assert body["batch_count"] == 1 == job.batch_count  # a small file: one batch


def test_a_big_files_job_shows_its_batches_before_a_worker_starts_it(staff_api, settings):
    from audience.ingest.engine import BUCKET_THRESHOLD_BYTES, BUCKETS_FOR_BIG_FILES

    rows = "".join(f"+2547{10000000 + n},Contact {n}\n" for n in range(BUCKET_THRESHOLD_BYTES // 20))
    body = _upload(staff_api, content=b"phone,name\n" + rows.encode()).json()
    assert body["status"] == ImportStatus.QUEUED and body["batch_count"] == BUCKETS_FOR_BIG_FILES


def test_the_job_reports_progress_counts_and_row_errors_after_the_task_ran(staff_api, analyst_api):
    job_id = _upload(staff_api).json()["id"]
    assert import_job_run(job_id) == ImportStatus.SUCCEEDED
    body = analyst_api.get(f"/api/v1/imports/{job_id}").json()
    assert (body["status"], body["progress"], body["total_rows"], body["created_count"]) == ("succeeded", 100, 3, 1)
    assert [(e["line"], e["column"]) for e in body["errors"]] == [(3, "phone"), (4, "timezone")]
    assert "IANA time zone" in body["errors"][1]["reason"] and body["errors"][1]["value"] == "Mars/Base"
    assert Contact.objects.get().name == "Amina"


def test_the_error_report_downloads_as_csv_with_formulas_escaped(staff_api):
    job_id = _upload(staff_api).json()["id"]
    import_job_run(job_id)
    response = staff_api.get(f"/api/v1/imports/{job_id}/errors")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert rows[0] == ["line", "column", "level", "reason", "value"]
    assert rows[1][:3] == ["3", "phone", "error"]
    assert rows[1][4] == "'=cmd|' /C calc'!A0"


def test_a_second_run_of_the_task_does_nothing(staff_api):
    job_id = _upload(staff_api).json()["id"]
    assert import_job_run(job_id) == ImportStatus.SUCCEEDED
    assert import_job_run(job_id) == "not claimed"
    assert ImportJob.objects.get(pk=job_id).attempts == 1


def test_a_file_that_cannot_be_imported_is_refused_at_once(staff_api):
    response = _upload(staff_api, content=b"name,email\nA,a@example.com\n")
    assert response.status_code == 400
    assert "no phone column" in response.json()["file"][0]
    assert not ImportJob.objects.exists()


def test_a_csv_without_a_consent_column_needs_the_default_consent_field(staff_api, media_root):  # noqa: F811
    response = _upload(staff_api, default_consent=None)
    assert response.status_code == 400
    assert set(response.json()) == {"default_consent"}
    assert "no consent column" in response.json()["default_consent"][0]
    assert not ImportJob.objects.exists()
    assert not [path for path in media_root.rglob("*") if path.is_file()]  # the upload was not kept


def test_a_csv_with_a_consent_column_needs_no_default_but_a_new_contact_must_have_one(staff_api):
    content = b"phone,consent\n+254712345678,opted_out\n+254712345679,\n"
    job_id = _upload(staff_api, content=content, default_consent=None).json()["id"]
    assert import_job_run(job_id) == ImportStatus.SUCCEEDED
    job = ImportJob.objects.get(pk=job_id)
    assert (job.created_count, job.invalid_count) == (1, 1)
    assert list(job.row_errors.values_list("line", "column", "level")) == [(3, "consent", "error")]
    assert list(Contact.objects.values_list("phone", "consent_status")) == [("+254712345678", "opted_out")]


def test_a_json_record_of_a_new_contact_without_consent_is_refused_on_its_row(staff_api):
    content = b'[{"phone": "+254712345678", "consent": "yes"}, {"phone": "+254712345679", "name": "B"}]'
    response = _upload(staff_api, content=content, name="list.json", default_consent=None)
    assert response.status_code == 202, response.content
    assert import_job_run(response.json()["id"]) == ImportStatus.SUCCEEDED
    job = ImportJob.objects.get()
    assert (job.created_count, job.invalid_count) == (1, 1)
    [(column, reason)] = job.row_errors.values_list("column", "reason")
    assert column == "consent" and "never assumed" in reason


def test_bad_options_are_refused(staff_api):
    response = _upload(staff_api, topic="Not A Topic!")
    assert response.status_code == 400 and "topic" in response.json()


def test_analysts_may_read_but_not_import_and_anonymous_users_get_401(analyst_api, anon_api, staff_api):
    assert _upload(analyst_api).status_code == 403
    assert _upload(anon_api).status_code == 401
    job_id = _upload(staff_api).json()["id"]
    assert analyst_api.get("/api/v1/imports/").status_code == 200
    assert anon_api.get(f"/api/v1/imports/{job_id}").status_code == 401


@pytest.mark.slow
def test_a_real_celery_worker_runs_the_import_from_redis(staff_api):
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        job_id = _upload(staff_api, content=b"phone\n+254712345678\n+254712345679\n", name="w.csv").json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = ImportJob.objects.get(pk=job_id)
            if job.is_finished:
                break
            time.sleep(0.2)
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert job.created_count == 2 and job.attempts == 1
    assert Contact.objects.count() == 2
