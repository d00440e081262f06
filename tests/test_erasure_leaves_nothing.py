"""An erased person is found nowhere: not in any table of a full data dump, nor in the uploaded files.

The contact goes through every door first: a CSV import (with a duplicate row and a misspelled
row; another import crashed and left its staging table), an admin edit, a campaign and an API
send through the real twilio client at the fake server, signed status callbacks, inbound replies
(SMS and WhatsApp), STOP then START, a consent change with written evidence, and the admin's and
reporting's exports.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from audience.ingest import sql
from audience.models import ConsentStatus, Contact, ImportJob, ImportStatus, Suppression
from audience.phones import phone_hash
from audience.tasks import ingest_contacts
from campaigns import services as campaigns
from campaigns.models import Campaign
from messaging.models import Message, MessageTemplate, Sender
from messaging.services import send
from tests import twilio_webhooks as tw
from tests.delivery import drain
from tests.fake_twilio import FakeTwilio
from tests.fixtures.ingest.helpers import media_root, roles  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("roles", "media_root")]

PHONE = "+254722918364"
NAME = "Wanjiru Kamau"
EMAIL = "wanjiru.kamau@example.org"
OTHER = "+254733000111"
SPELLINGS = [
    PHONE,
    PHONE.lstrip("+"),
    "0722918364",
    "0722 918 364",
    "0722-918-364",
    "+254 722 918 364",
    f"whatsapp:{PHONE}",
    "%2B254722918364",
]
# The digits of the national number with any separators between them: every spelling above and more.
ANY_SPELLING = re.compile(r"[\s.\-()/]*".join("722918364"))
CSV_FILE = (
    "phone,name,email,city\n"
    f"+254 722 918 364,W. Kamau,{EMAIL},Nairobi\n"  # a duplicate: the later row wins
    f"{PHONE},{NAME},{EMAIL},Nairobi\n"
    f"0722 918 364,{NAME},{EMAIL.upper()},Nairobi\n"  # no country code: an error row keeping the cell
    f"{OTHER},Otieno Baraka,otieno@example.org,Mombasa\n"
)
SID = "AC" + "9d" * 16
TOKEN = "erasure-test-token"


def database_dump() -> str:
    """Every row of every table of the database, as JSON text (what pg_dump --data-only would hold)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        tables = cursor.fetchall()
        rows = []
        for schema, table in tables:
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{schema}"."{table}" t')
            rows += [f"{table}: {row[0]}" for row in cursor.fetchall()]
    assert len(tables) > 30  # the whole database, not a chosen few tables
    return "\n".join(rows)


def traces(text: str) -> list[str]:
    """Each line of ``text`` that holds the person: their phone in any spelling, name, e-mail or plain hash."""
    plain_hash = hashlib.sha256(PHONE.encode()).hexdigest()
    needles = [*SPELLINGS, NAME, EMAIL, plain_hash]
    lowered = text.lower()
    found = [needle for needle in needles if needle.lower() in lowered]
    found += [
        f"{match.group(0)!r} in {text[max(0, match.start() - 80) : match.end() + 20]!r}"
        for match in ANY_SPELLING.finditer(text)
    ]
    return found


def uploaded_files_text(media) -> str:
    return "\n".join(path.read_bytes().decode("utf-8", "replace") for path in media.rglob("*") if path.is_file())


def _webhook_post(client: Client):
    def post(url: str, params: dict, signature: str) -> int:
        return client.post(
            url[len(tw.PUBLIC) :],
            urlencode(params),
            content_type="application/x-www-form-urlencoded",
            HTTP_X_TWILIO_SIGNATURE=signature,
        ).status_code

    return post


@pytest.fixture
def fake(settings):
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="manual") as server:
        settings.MESSAGING_PROVIDER = "twilio"
        settings.TWILIO_ACCOUNT_SID = SID
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.TWILIO_API_BASE_URL = server.base_url
        settings.PUBLIC_BASE_URL = tw.PUBLIC
        yield server


def _import(staff_api) -> ImportJob:
    upload = SimpleUploadedFile(f"{NAME} contacts.csv", CSV_FILE.encode())
    response = staff_api.post(
        "/api/v1/contacts/import", {"file": upload, "default_consent": "opted_in"}, format="multipart"
    )
    assert response.status_code == 202, response.content
    assert ingest_contacts(response.json()["id"]) == ImportStatus.SUCCEEDED
    return ImportJob.objects.get(pk=response.json()["id"])


def _crashed_import_leftover() -> None:
    """The staging table of an import whose worker died, never run again."""
    job = ImportJob.objects.create(source="api", file_path="", file_name="crashed.csv", status=ImportStatus.FAILED)
    stage = sql.stage_name(job.pk)
    with connection.cursor() as cursor:
        for statement in sql.create_stage(stage, 1):
            cursor.execute(statement)
        cursor.execute(
            f"INSERT INTO {stage} (line, bucket, phone, name, email) VALUES (2, 0, %s, %s, %s)", [PHONE, NAME, EMAIL]
        )


def _admin_edit(staff_user, contact: Contact) -> None:
    admin = Client()
    admin.force_login(staff_user)
    events = contact.consent_events.count()
    form = {
        "phone": contact.phone,
        "name": NAME,
        "email": EMAIL,
        "channel": "sms",
        "locale": "sw",
        "timezone": "Africa/Nairobi",
        "attributes": '{"city": "Nairobi", "note": "prefers WhatsApp"}',
        "consent_events-TOTAL_FORMS": str(events),
        "consent_events-INITIAL_FORMS": str(events),
        "consent_events-MIN_NUM_FORMS": "0",
        "consent_events-MAX_NUM_FORMS": "1000",
    }
    response = admin.post(f"/admin/audience/contact/{contact.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert LogEntry.objects.filter(object_id=str(contact.pk), action_flag=CHANGE).exists()
    # An entry the admin wrote when a contact's name was its title (before titles named no one).
    LogEntry.objects.create(
        user=staff_user,
        content_type=ContentType.objects.get_for_model(Contact),
        object_id=str(contact.pk),
        object_repr=f"{NAME} <{PHONE}>",
        action_flag=CHANGE,
        change_message="[]",
    )


def _send_everything(staff_api, fake, contact: Contact) -> None:
    sender = Sender.objects.create(
        name="sms", channel="sms", kind="long_code", provider="twilio", from_address="+15005550006"
    )
    template = MessageTemplate.objects.create(name="hello", channel="sms", body="Hello {{ name }}, from Acme")
    run = campaigns.campaign_launch(Campaign.objects.create(name="Hello", template=template, sender=sender))
    drain(run)
    response = staff_api.post(
        "/api/v1/messages/",
        {"phone": "+254 722 918 364", "body": f"Karibu {NAME}!", "sender": sender.pk},
        format="json",
        HTTP_IDEMPOTENCY_KEY=f"welcome-{PHONE}",
    )
    assert response.status_code == 202, response.content
    send.message_send(response.json()["id"])
    callbacks = fake.deliver_callbacks(_webhook_post(Client()))
    assert callbacks and all(200 <= code < 300 for code in callbacks)
    assert Message.objects.filter(contact=contact, status="delivered").count() == 2


def _replies_and_consent(staff_api, settings, contact: Contact) -> None:
    settings.TWILIO_AUTH_TOKEN = tw.TOKEN
    webhook = Client()
    replies = [
        tw.inbound_payload(
            "SM" + "e1" * 16, f"Hi, it is {NAME} ({EMAIL}), my other number is 0722 918 364", phone=PHONE
        ),
        tw.inbound_payload("SM" + "e2" * 16, "STOP", phone=PHONE, whatsapp=True) | {"ProfileName": NAME},
        tw.inbound_payload("SM" + "e3" * 16, "START", phone=PHONE),
    ]
    for payload in replies:
        assert tw.post_form(webhook, tw.INBOUND_PATH, payload).status_code == 200
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_IN
    response = staff_api.post(
        f"/api/v1/contacts/{contact.pk}/consent",
        {"status": "opted_out", "evidence": {"note": f"{NAME} called from {PHONE} to stop", "email": EMAIL}},
        format="json",
    )
    assert response.status_code == 200, response.content


def _exports(staff_api, staff_user) -> None:
    admin = Client()
    admin.force_login(staff_user)
    columns = ("phone", "name", "email", "attributes")
    form = {"format": "0", "resource": "0", **{f"contactexportresource_{column}": "on" for column in columns}}
    exported = admin.post("/admin/audience/contact/export/", form)
    assert exported.status_code == 200 and PHONE.encode() in exported.content, exported.content[:500]
    report = staff_api.get("/api/v1/reporting/messages/export")
    rows = list(csv.reader(io.StringIO(b"".join(report.streaming_content).decode())))
    assert any(PHONE in row for row in rows)


def test_an_erased_contact_is_in_no_table_and_no_uploaded_file(staff_api, staff_user, fake, settings):
    job = _import(staff_api)
    contact = Contact.objects.get(phone=PHONE)
    assert (contact.name, contact.email) == (NAME, EMAIL)
    assert job.row_errors.count() == 2  # the duplicate and the misspelled row, each keeping its cell
    _crashed_import_leftover()
    _admin_edit(staff_user, contact)
    _send_everything(staff_api, fake, contact)
    _replies_and_consent(staff_api, settings, contact)
    _exports(staff_api, staff_user)
    before = traces(database_dump())
    assert {PHONE, NAME, EMAIL, f"whatsapp:{PHONE}", "0722 918 364"} <= set(before), before
    assert PHONE in uploaded_files_text(settings.MEDIA_ROOT)

    assert staff_api.delete(f"/api/v1/contacts/{contact.pk}/").status_code == 204

    assert traces(database_dump()) == []
    assert traces(uploaded_files_text(settings.MEDIA_ROOT)) == []
    # What stays: the suppression (it had opted out), the other person, and the counts.
    assert Suppression.objects.filter(phone_hash=phone_hash(PHONE)).exists()
    assert Contact.objects.filter(phone=OTHER).exists()
    assert Message.objects.filter(contact__isnull=True, direction="outbound").count() == 2
