"""The admin door: drag-and-drop page, dry-run preview with per-row problems, confirm, progress page."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from audience.models import Contact, ImportJob, ImportStatus
from audience.tasks import import_job_run
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("roles", "media_root")]

IMPORT_URL = "/admin/audience/contact/import/"
CSV = (
    b"phone;name;timezone\n+254712345678;Amina;Africa/Nairobi\nnope;x;\n"
    b"+254712345679;Bob;Mars/Base\n+254712345678;Amina K;\n"
)


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    return client


def _preview(staff_client, content=CSV, **data):
    upload = SimpleUploadedFile("list.csv", content, content_type="text/csv")
    return staff_client.post(
        IMPORT_URL, {"import_file": upload, "resource": "0", "default_consent": "opted_in", **data}
    )


def test_the_import_page_offers_drag_and_drop_and_the_engine_options(staff_client):
    page = staff_client.get(IMPORT_URL).content.decode()
    assert 'class="import-dropzone"' in page and "audience/import_dropzone.js" in page
    assert 'name="default_consent"' in page and 'name="skip_existing"' in page and 'name="topic"' in page
    consent_inputs = re.findall(r'<input[^>]*name="default_consent"[^>]*>', page)
    assert len(consent_inputs) == 2 and not any("checked" in tag for tag in consent_inputs)  # nothing preselected


def test_a_file_without_a_consent_column_needs_a_consent_choice(staff_client):
    response = _preview(staff_client, default_consent="")
    errors = response.context["form"].errors
    assert set(errors) == {"default_consent"} and "no consent column" in errors["default_consent"][0]
    assert not ImportJob.objects.exists()
    page = _preview(staff_client, content=b"phone,consent\n+254712345678,yes\n+254712345679,\n", default_consent="")
    assert "Dry run of list.csv" in page.content.decode()
    assert [problem[:3] for problem in page.context["preview"].problems] == [(3, "consent", "error")]
    assert page.context["preview"].counts["new"] == 1
    assert staff_client.get("/static/audience/import_dropzone.js").status_code == 200


def test_the_dry_run_shows_each_rows_action_and_problems_without_writing(staff_client):
    response = _preview(staff_client)
    page = response.content.decode()
    assert response.status_code == 200
    assert "Dry run of list.csv" in page and "Nothing has been written yet" in page
    assert "not a phone number" in page and "Mars/Base" in page  # the reason, and the value beside it
    assert "duplicate" in page and "separated by" in page
    assert not Contact.objects.exists()
    job = ImportJob.objects.get()
    assert job.status == ImportStatus.PENDING and f'name="job" value="{job.pk}"' in page


def test_the_dry_run_warns_that_an_opted_out_contact_stays_opted_out(staff_client):
    from audience import services
    from audience.models import ConsentSource, ConsentStatus

    contact = services.contact_create(phone="+254712345678", source=ConsentSource.API)
    services.consent_change(contact, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD)
    contact.refresh_from_db()
    page = _preview(staff_client, content=b"phone,consent\n+254712345678,yes\n+254712345679,yes\n").content.decode()
    assert f"this contact opted out on {contact.opted_out_at:%Y-%m-%d}; an import does not opt them back in" in page
    assert page.count("does not opt them back in") == 1


def test_a_file_without_a_phone_column_is_refused_on_the_form(staff_client):
    page = _preview(staff_client, content=b"name\nA\n").content.decode()
    assert "no phone column" in page and not ImportJob.objects.exists()


def test_confirming_a_small_file_imports_it_and_shows_the_job_page(staff_client):
    _preview(staff_client, topic="fair")
    job = ImportJob.objects.get()
    response = staff_client.post("/admin/audience/contact/process_import/", {"job": job.pk, "accept_errors": "1"})
    assert response.status_code == 302 and response["Location"] == f"/admin/audience/contact/import/{job.pk}/"
    job.refresh_from_db()
    assert job.status == ImportStatus.SUCCEEDED and (job.created_count, job.invalid_count) == (1, 2)
    assert Contact.objects.get().name == "Amina K"
    page = staff_client.get(response["Location"]).content.decode()
    assert 'id="import-progress"' in page and "audience/import_progress.js" in page and "Mars/Base" in page
    status = staff_client.get(f"/admin/audience/contact/import/{job.pk}/status/").json()
    assert (status["status"], status["progress"], status["finished"]) == ("succeeded", 100.0, True)
    errors = b"".join(staff_client.get(f"/admin/audience/contact/import/{job.pk}/errors.csv").streaming_content)
    assert errors.startswith("\ufeffline,column,level,reason,value".encode()) and b"Mars/Base" in errors


@override_settings(INGEST_INLINE_MAX_BYTES=10)
def test_confirming_a_big_file_queues_it_for_a_worker(staff_client):
    _preview(staff_client)
    job = ImportJob.objects.get()
    staff_client.post("/admin/audience/contact/process_import/", {"job": job.pk, "accept_errors": "1"})
    job.refresh_from_db()
    assert job.status == ImportStatus.QUEUED and not Contact.objects.exists()
    status = staff_client.get(f"/admin/audience/contact/import/{job.pk}/status/").json()
    assert (status["status"], status["finished"]) == ("queued", False)
    assert import_job_run(job.pk) == ImportStatus.SUCCEEDED  # what the worker runs
    assert Contact.objects.get().name == "Amina K"


def test_a_confirmed_job_cannot_be_confirmed_again(staff_client):
    _preview(staff_client)
    job = ImportJob.objects.get()
    staff_client.post("/admin/audience/contact/process_import/", {"job": job.pk, "accept_errors": "1"})
    staff_client.post("/admin/audience/contact/process_import/", {"job": job.pk, "accept_errors": "1"})
    assert ImportJob.objects.get().attempts == 1


def test_the_changelist_links_to_import_and_export(staff_client):
    page = staff_client.get("/admin/audience/contact/").content.decode()
    assert IMPORT_URL in page


def test_the_import_jobs_list_shows_progress_and_links_to_the_job_page(staff_client):
    _preview(staff_client)
    job = ImportJob.objects.get()
    staff_client.post("/admin/audience/contact/process_import/", {"job": job.pk, "accept_errors": "1"})
    listing = staff_client.get("/admin/audience/importjob/").content.decode()
    assert '<progress max="100" value="100.0">' in listing and "list.csv" in listing
    detail = staff_client.get(f"/admin/audience/importjob/{job.pk}/change/").content.decode()
    assert f"/admin/audience/contact/import/{job.pk}/" in detail


def test_confirming_a_preview_whose_file_was_purged_says_so_and_imports_nothing(staff_client):
    from datetime import timedelta

    from django.utils import timezone

    from audience.ingest.services import import_files_purge

    _preview(staff_client)
    job = ImportJob.objects.get()
    ImportJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(days=30))
    assert import_files_purge() == 1  # an unconfirmed preview's file, past its retention
    response = staff_client.post(
        "/admin/audience/contact/process_import/", {"job": job.pk, "accept_errors": "1"}, follow=True
    )
    assert "removed after the retention period" in response.content.decode()
    job.refresh_from_db()
    assert job.status == ImportStatus.PENDING and Contact.objects.count() == 0


def test_exporting_contacts_needs_the_view_permission(client, staff_client):
    Contact.objects.create(phone="+254712345678", name="Amina")
    assert staff_client.get("/admin/audience/contact/export/").status_code == 200
    client.force_login(UserFactory(username="no-role", is_staff=True))  # staff flag, no role
    assert client.get("/admin/audience/contact/").status_code == 403
    assert client.get("/admin/audience/contact/export/").status_code == 403
    refused = client.post("/admin/audience/contact/export/", {"format": "0", "resource": "0"})
    assert refused.status_code == 403 and b"+254712345678" not in refused.content
