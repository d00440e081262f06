"""The three doors run one engine: the same file with the same options gives the same result.

The admin page, the API and ``manage.py import_contacts`` each take the same file
into the same starting contacts; the contacts, their topics, the consent ledger,
the job's counts and every row problem must come out the same.
"""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection

from audience import services
from audience.models import ConsentEvent, ConsentSource, ConsentStatus, Contact, ImportJob, ImportStatus
from audience.tasks import import_job_run
from tests.factories import UserFactory
from tests.ingest import write

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("roles", "media_root")]

FILE = (
    "phone,name,timezone,consent,topics,plan\n"
    "+254712345678,Amina,Africa/Nairobi,,news,pro\n"
    "whatsapp:+254712345679,Baraka,,no,news|vip,free\n"
    "not-a-phone,Broken,,,,\n"
    "+254712345680,Chebet,Mars/Base,,,\n"
    "+254712345678,Amina K,,,promotions,basic\n"
    '+254712345681,"=HYPERLINK(""http://x"")",,,,\n'
    "+254712345682,Daudi,Europe/London,maybe,,\n"
    "+254712345690,Esther,,yes,,gold\n"
    "+254712345691,Fumo,,,vip,\n"
)
OPTIONS = {"topic": "doors", "default_consent": ConsentStatus.OPTED_IN}


def _reset() -> None:
    """Empty contacts and jobs, then the contacts every door starts from."""
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE audience_contacttopic, audience_consentevent, audience_contact, audience_importrowerror, "
            "audience_importjob, audience_suppression CASCADE"
        )
    stopped = services.contact_create(phone="+254712345690", name="Esther", source=ConsentSource.API)
    services.consent_change(stopped, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD)
    services.contact_create(phone="+254712345691", name="Old name", source=ConsentSource.API)


def _outcome(job: ImportJob) -> dict:
    job.refresh_from_db()
    assert job.status == ImportStatus.SUCCEEDED, job.error
    contacts = {
        contact.phone: (
            contact.name,
            contact.timezone,
            contact.consent_status,
            json.dumps(contact.attributes, sort_keys=True),
            tuple(sorted(topic.name for topic in contact.topics.all())),
        )
        for contact in Contact.objects.prefetch_related("topics")
    }
    events = sorted(
        (event.phone_hash, event.from_status, event.to_status, event.source, (event.evidence or {}).get("line"))
        for event in ConsentEvent.objects.all()
    )
    counts = {
        name: getattr(job, name)
        for name in (
            "total_rows",
            "created_count",
            "updated_count",
            "unchanged_count",
            "skipped_count",
            "invalid_count",
            "duplicate_count",
            "warning_count",
        )
    }
    problems = list(job.row_errors.order_by("line", "column", "id").values_list("line", "column", "level", "reason"))
    return {"contacts": contacts, "events": events, "counts": counts, "problems": problems, "options": job.options}


def _by_command(tmp_path, options=OPTIONS) -> ImportJob:
    path = write(tmp_path, "list.csv", FILE)
    arguments = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    call_command("import_contacts", str(path), *arguments, verbosity=0)
    return ImportJob.objects.get()


def _by_api(staff_api, options=OPTIONS) -> ImportJob:
    upload = SimpleUploadedFile("list.csv", FILE.encode())
    response = staff_api.post("/api/v1/contacts/import", {"file": upload, **options}, format="multipart")
    assert response.status_code == 202, response.content
    assert import_job_run(response.json()["id"]) == ImportStatus.SUCCEEDED
    return ImportJob.objects.get()


def _by_admin(client, options=OPTIONS) -> ImportJob:
    client.force_login(UserFactory(username="boss", is_superuser=True))
    upload = SimpleUploadedFile("list.csv", FILE.encode(), content_type="text/csv")
    page = client.post("/admin/audience/contact/import/", {"import_file": upload, "resource": "0", **options})
    assert page.status_code == 200 and "Dry run of list.csv" in page.content.decode()
    job = ImportJob.objects.get()
    assert not Contact.objects.filter(phone="+254712345678").exists()  # the dry run wrote nothing
    response = client.post("/admin/audience/contact/process_import/", {"job": job.pk, "accept_errors": "1"})
    assert response.status_code == 302
    job.refresh_from_db()
    if job.status == ImportStatus.QUEUED:  # a file the settings send to the worker
        import_job_run(job.pk)
    return job


def test_the_admin_the_api_and_the_command_give_the_same_result_on_the_same_file(tmp_path, client, staff_api):
    outcomes = {}
    for door, run in (
        ("command", lambda: _by_command(tmp_path)),
        ("api", lambda: _by_api(staff_api)),
        ("admin", lambda: _by_admin(client)),
    ):
        _reset()
        outcomes[door] = _outcome(run())

    command = outcomes["command"]
    assert outcomes["api"] == command
    assert outcomes["admin"] == command
    # And the result is the one the file asks for, so that three equal wrong answers fail too.
    assert command["counts"] == {
        "total_rows": 9,
        "created_count": 3,
        "updated_count": 2,
        "unchanged_count": 0,
        "skipped_count": 0,
        "invalid_count": 3,
        "duplicate_count": 1,
        "warning_count": 3,
    }
    contacts = command["contacts"]
    # The later row wins whole: line 2's time zone goes with it.
    assert contacts["+254712345678"] == ("Amina K", "", "opted_in", '{"plan": "basic"}', ("doors", "promotions"))
    assert contacts["+254712345679"][2] == "opted_out" and contacts["+254712345679"][4] == ("doors", "news", "vip")
    assert contacts["+254712345681"][0] == '=HYPERLINK("http://x")'  # stored as text
    assert contacts["+254712345690"][:3] == ("Esther", "", "opted_out")  # an import does not opt back in
    assert contacts["+254712345691"][0] == "Fumo" and contacts["+254712345691"][4] == ("doors", "vip")
    assert set(contacts) == {f"+2547123456{n}" for n in (78, 79, 81, 90, 91)}
    assert [(line, column, level) for line, column, level, _ in command["problems"]] == [
        (2, "phone", "warning"),
        (4, "phone", "error"),
        (5, "timezone", "error"),
        (7, "name", "warning"),
        (8, "consent", "error"),
        (9, "consent", "warning"),
    ]
    imported_events = [event for event in command["events"] if event[3] == ConsentSource.IMPORT]
    assert sorted((to, line) for _, _, to, _, line in imported_events) == [
        ("opted_in", 6),
        ("opted_in", 7),
        ("opted_out", 3),
    ]


def test_without_a_default_consent_the_three_doors_refuse_the_same_new_contacts(tmp_path, client, staff_api):
    """The file has a consent column; its new contacts whose cell is empty are refused, by every door alike."""
    options = {"topic": "doors"}
    outcomes = {}
    for door, run in (
        ("command", lambda: _by_command(tmp_path, options)),
        ("api", lambda: _by_api(staff_api, options)),
        ("admin", lambda: _by_admin(client, options)),
    ):
        _reset()
        outcomes[door] = _outcome(run())
    command = outcomes["command"]
    assert outcomes["api"] == command and outcomes["admin"] == command
    assert command["options"]["default_consent"] is None
    # Lines 6 and 7 (new contacts, no consent) join the invalid rows; line 10's existing contact may leave it out.
    assert (command["counts"]["created_count"], command["counts"]["invalid_count"]) == (1, 5)
    refused = [(line, column) for line, column, level, reason in command["problems"] if "never assumed" in reason]
    assert refused == [(6, "consent"), (7, "consent")]
    assert set(command["contacts"]) == {"+254712345679", "+254712345690", "+254712345691"}
    assert command["contacts"]["+254712345691"][0] == "Fumo"
