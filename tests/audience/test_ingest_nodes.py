"""Imports across two nodes: the web node and the worker node share no disk, only PostgreSQL, Redis and a bucket.

This process is the web node (its own MEDIA_ROOT, the API and the admin); the worker node is a
``celery worker`` process with another MEDIA_ROOT and TMPDIR; the bucket is an S3-compatible server
(moto) both reach over HTTP, configured from the environment as in production (S3_BUCKET,
S3_ENDPOINT_URL, the keys, the region). An import uploaded to the web node is run by the worker
node from the bucket and gives the same contacts as on one machine.
"""

import time
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from audience.ingest import services
from audience.ingest.readers import CHUNK_BYTES
from audience.models import Contact, ImportJob, ImportStatus
from audience.tasks import import_job_run
from config.celery import app as celery_app
from tests.factories import UserFactory
from tests.nodes import S3Server, WorkerNode

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("roles"), pytest.mark.slow]

ROWS = 30_000


def _csv(rows: int, first: int = 0) -> bytes:
    """A file of several chunks: duplicates (the last wins), bad phones, consent and topics per row."""
    lines = ["phone,name,email,consent,topics,attr.tier"]
    for n in range(first, first + rows):
        phone = f"+2547{n % (rows - 500) + first:08d}"  # the last 500 rows repeat earlier phones
        if n % 997 == 0:
            phone = f"not-a-phone-{n}"
        consent = "opted_out" if n % 7 == 0 else "opted_in"
        lines.append(f"{phone},Person {n},p{n}@example.org,{consent},t{n % 3}|all,{n % 5}")
    return ("\n".join(lines) + "\n").encode()


def _contacts() -> list[tuple]:
    rows = Contact.objects.order_by("phone").values_list("phone", "name", "email", "consent_status", "attributes")
    topics = {}
    for phone, name in Contact.objects.values_list("phone", "topics__name"):
        topics.setdefault(phone, set()).add(name)
    return [(*row, sorted(topics[row[0]])) for row in rows]


def _wait_finished(job_id: int, timeout: float = 120.0) -> ImportJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ImportJob.objects.get(pk=job_id)
        if job.is_finished:
            return job
        time.sleep(0.2)
    raise AssertionError(f"import {job_id} did not finish: {ImportJob.objects.get(pk=job_id).stage}")


def _forget_imports() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE audience_contact, audience_contacttopic, audience_topic, audience_consentevent,"
            " audience_importjob, audience_importrowerror CASCADE"
        )


@pytest.fixture
def s3():
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def web_node(settings, tmp_path, s3):
    """This process as the web node: its own MEDIA_ROOT, the bucket as its default storage."""
    settings.MEDIA_ROOT = tmp_path / "web" / "media"
    settings.STORAGES = s3.storages()
    settings.INGEST_WORKERS = 2
    return settings.MEDIA_ROOT


@pytest.fixture
def worker_node(tmp_path, s3):
    assert celery_app.conf.broker_url  # the worker and this process share the broker
    celery_app.control.purge()
    node = WorkerNode(tmp_path / "worker", {**s3.env, "INGEST_WORKERS": "2"}).start()
    yield node
    node.stop()
    celery_app.control.purge()


def _local_files(root) -> list:
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def test_an_api_import_runs_on_the_worker_node_from_the_bucket_with_the_contacts_of_one_machine(
    settings, tmp_path, s3, staff_api
):
    content = _csv(ROWS)
    assert len(content) > 2 * CHUNK_BYTES  # several chunks, validated by the worker's pool

    # One machine: the file system storage, the task run here.
    settings.MEDIA_ROOT = tmp_path / "one" / "media"
    settings.INGEST_WORKERS = 2
    upload = SimpleUploadedFile("contacts.csv", content)
    response = staff_api.post("/api/v1/contacts/import", {"file": upload}, format="multipart")
    assert response.status_code == 202, response.content
    assert import_job_run(response.json()["id"]) == ImportStatus.SUCCEEDED
    one = ImportJob.objects.get()
    expected = _contacts()
    counts = (one.total_rows, one.created_count, one.invalid_count, one.duplicate_count)
    assert counts[1] == len({n % (ROWS - 500) for n in range(ROWS) if n % 997})  # the distinct good phones
    _forget_imports()

    # Two nodes: the upload goes to the bucket, the worker node (another MEDIA_ROOT) runs it.
    settings.MEDIA_ROOT = tmp_path / "web" / "media"
    settings.STORAGES = s3.storages()
    node = WorkerNode(tmp_path / "worker", {**s3.env, "INGEST_WORKERS": "2"})
    celery_app.control.purge()
    node.start()
    try:
        upload = SimpleUploadedFile("contacts.csv", content)
        response = staff_api.post("/api/v1/contacts/import", {"file": upload}, format="multipart")
        assert response.status_code == 202, response.content
        job = _wait_finished(response.json()["id"])
    finally:
        node.stop()
        celery_app.control.purge()
    assert job.status == ImportStatus.SUCCEEDED, (job.error, node.log.read_text()[-2000:])
    assert (job.total_rows, job.created_count, job.invalid_count, job.duplicate_count) == counts
    assert job.details["seconds"]["read"] > 0 and job.batch_count == 1
    assert _contacts() == expected
    assert s3.keys() == [job.file_path] and job.file_path.startswith("imports/")
    assert _local_files(settings.MEDIA_ROOT) == [] and node.files() == []  # nothing on either node's disk

    # Retention deletes it from the bucket, as it did from MEDIA_ROOT.
    ImportJob.objects.filter(pk=job.pk).update(finished_at=timezone.now() - timedelta(days=8))
    assert services.import_files_purge(days=7) == 1
    assert s3.keys() == [] and ImportJob.objects.get(pk=job.pk).file_path == ""


@override_settings(INGEST_INLINE_MAX_BYTES=10)
def test_an_admin_background_import_is_previewed_on_the_web_node_and_run_on_the_worker_node(
    client, web_node, worker_node, s3
):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    rows = 25_000
    content = "phone,name\n" + "".join(f"+2547{n:08d},Admin {n}\n" for n in range(rows))
    assert len(content) > CHUNK_BYTES
    upload = SimpleUploadedFile("admin.csv", content.encode(), content_type="text/csv")
    page = client.post(
        "/admin/audience/contact/import/", {"import_file": upload, "resource": "0", "default_consent": "opted_in"}
    )
    preview = page.context["preview"]  # the first chunk, read from the upload this node still holds
    assert page.status_code == 200 and preview.counts["new"] >= 1000 and not preview.complete
    job = ImportJob.objects.get()
    assert job.status == ImportStatus.PENDING and s3.keys() == [job.file_path]

    client.post("/admin/audience/contact/process_import/", {"job": job.pk})
    assert ImportJob.objects.get(pk=job.pk).status in (ImportStatus.QUEUED, ImportStatus.RUNNING)  # not here
    job = _wait_finished(job.pk)
    assert job.status == ImportStatus.SUCCEEDED, (job.error, worker_node.log.read_text()[-2000:])
    assert job.created_count == rows == Contact.objects.count()
    assert Contact.objects.get(phone="+254700024999").name == "Admin 24999"
    assert _local_files(web_node) == [] and worker_node.files() == []


def test_a_file_gone_from_the_bucket_fails_the_job_naming_it(web_node, s3, tmp_path):
    content = b"phone,consent\n+254712345678,yes\n"
    job = services.import_job_create(
        source="api", upload=SimpleUploadedFile("gone.csv", content), options={"default_consent": None}
    )
    s3.client().delete_object(Bucket=s3.bucket, Key=job.file_path)
    claimed = services.import_job_claim(job.pk)
    job = services.import_job_run(claimed)
    assert job.status == ImportStatus.FAILED and "no longer on the server" in job.error
    assert Contact.objects.count() == 0


@pytest.mark.parametrize("bucket", [False, True])
def test_an_upload_too_big_for_memory_is_previewed_whichever_storage_keeps_it(client, settings, tmp_path, bucket):
    """Over FILE_UPLOAD_MAX_MEMORY_SIZE an upload is a temporary file, which the file system storage moves."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000
    server = S3Server().start() if bucket else None
    try:
        if server:
            settings.STORAGES = server.storages()
        client.force_login(UserFactory(username="boss", is_superuser=True))
        content = "phone,name\n" + "".join(f"+2547{n:08d},Big {n}\n" for n in range(200))
        upload = SimpleUploadedFile("big.csv", content.encode(), content_type="text/csv")
        page = client.post(
            "/admin/audience/contact/import/", {"import_file": upload, "resource": "0", "default_consent": "opted_in"}
        )
        assert page.status_code == 200 and page.context["preview"].counts["new"] == 200
        job = ImportJob.objects.get()
        client.post("/admin/audience/contact/process_import/", {"job": job.pk})  # small: runs in the request
        assert ImportJob.objects.get(pk=job.pk).status == ImportStatus.SUCCEEDED and Contact.objects.count() == 200
        assert (server.keys() if server else [p.name for p in (tmp_path / "media" / "imports").iterdir()]) != []
    finally:
        if server:
            server.stop()
