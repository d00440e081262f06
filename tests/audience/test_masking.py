"""One masking policy: without audience.see_full_phone (Analysts), every door shows phones, names and e-mails masked.

Each door is asked twice, as an analyst (masked) and as staff (whole), so every check can fail. Free
text (message bodies, evidence, payloads) is redacted of phone numbers and e-mail addresses.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from audience import services as audience
from audience.models import ConsentSource, ConsentStatus, ImportJob, ImportRowError, Suppression
from audience.phones import phone_hash
from config.privacy import FULL_PHONE_PERMISSION, email_mask, name_mask, phone_mask, redact, redact_json
from config.roles import ANALYSTS, STAFF
from messaging.models import Message, ProviderCallback, Sender
from messaging.services.inbound import inbound_message_record

pytestmark = pytest.mark.django_db

PHONE = "+254722918364"
NAME = "Wanjiru Kamau"
EMAIL = "wanjiru.kamau@example.org"
DIGITS = "722918364"


@pytest.fixture
def contact():
    return audience.contact_create(
        phone=PHONE, name=NAME, email=EMAIL, source=ConsentSource.API, evidence={"note": f"form signed by {PHONE}"}
    )


@pytest.fixture
def messages(contact):
    sender = Sender.objects.create(name="sms", channel="sms", kind="long_code", from_address="+15005550006")
    outbound = Message.objects.create(
        contact=contact, sender=sender, channel="sms", to_address=PHONE, from_address="+15005550006", body="Hi"
    )
    inbound = inbound_message_record(
        provider_sid="SM" + "ab" * 16,
        from_address=f"whatsapp:{PHONE}",
        to_address="whatsapp:+15005550007",
        body="call me on 0722 918 364",
        payload={"From": f"whatsapp:{PHONE}", "ProfileName": NAME},
    )
    return outbound, inbound


def _session(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _holds_person(text: str) -> bool:
    return PHONE in text or DIGITS in text.replace(" ", "") or NAME in text or EMAIL in text


def test_staff_hold_the_permission_and_analysts_do_not(staff_user, analyst_user):
    assert staff_user.has_perm(FULL_PHONE_PERMISSION) and not analyst_user.has_perm(FULL_PHONE_PERMISSION)
    codename = FULL_PHONE_PERMISSION.split(".")[1]
    assert Group.objects.get(name=STAFF).permissions.filter(codename=codename).exists()
    assert not Group.objects.get(name=ANALYSTS).permissions.filter(codename=codename).exists()


def test_the_masks_keep_enough_to_tell_rows_apart():
    assert phone_mask(PHONE) == "+2547******64" and phone_mask(f"whatsapp:{PHONE}") == "whatsapp:+2547******64"
    assert name_mask(NAME) == "W. K." and email_mask(EMAIL) == "w***@***.org"
    assert redact(f"call {PHONE} or 0722 918 364, or {EMAIL}") == "call +25********64 or 072*******64, or [email]"
    payload = {"From": f"whatsapp:{PHONE}", "ProfileName": NAME, "WaId": PHONE[1:], "Body": "hi"}
    assert redact_json(payload) == {
        "From": "whatsapp:+25********64",
        "ProfileName": "W. K.",
        "WaId": "254*******64",
        "Body": "hi",
    }


# --- API -------------------------------------------------------------------------------------


def test_the_contacts_api_masks_phone_name_and_email_for_analysts(analyst_api, staff_api, contact):
    listed = analyst_api.get("/api/v1/contacts/").json()["results"][0]
    detail = analyst_api.get(f"/api/v1/contacts/{contact.pk}/").json()
    for body in (listed, detail):
        assert (body["phone"], body["name"], body["email"]) == (phone_mask(PHONE), "W. K.", "w***@***.org")
    history = analyst_api.get(f"/api/v1/contacts/{contact.pk}/consent-history").json()
    assert not _holds_person(json.dumps(history)) and "form signed by" in json.dumps(history)
    whole = staff_api.get(f"/api/v1/contacts/{contact.pk}/").json()
    assert (whole["phone"], whole["name"], whole["email"]) == (PHONE, NAME, EMAIL)
    assert PHONE in json.dumps(staff_api.get(f"/api/v1/contacts/{contact.pk}/consent-history").json())


def test_a_user_given_the_permission_sees_whole_phones_in_every_app(analyst_api, analyst_user, contact, messages):
    analyst_user.user_permissions.add(Permission.objects.get(codename="see_full_phone"))
    assert analyst_api.get(f"/api/v1/contacts/{contact.pk}/").json()["phone"] == PHONE
    report = analyst_api.get("/api/v1/monitoring/inbound").json()["results"]
    assert [row["from_address"] for row in report] == [f"whatsapp:{PHONE}"]


def test_the_messages_api_masks_the_persons_address_and_numbers_in_texts(analyst_api, staff_api, messages):
    outbound, inbound = messages
    rows = {row["id"]: row for row in analyst_api.get("/api/v1/messages/").json()["results"]}
    assert rows[outbound.pk]["to_address"] == phone_mask(PHONE) and rows[outbound.pk]["from_address"] == "+15005550006"
    assert rows[inbound.pk]["from_address"] == f"whatsapp:{phone_mask(PHONE)}"
    detail = analyst_api.get(f"/api/v1/messages/{inbound.pk}/").json()
    assert not _holds_person(json.dumps(detail)) and detail["body"].startswith("call me on 072")
    assert staff_api.get(f"/api/v1/messages/{inbound.pk}/").json()["from_address"] == f"whatsapp:{PHONE}"


def test_the_inbound_stream_masks_the_sender_and_numbers_in_bodies_for_analysts(analyst_api, staff_api, messages):
    (row,) = analyst_api.get("/api/v1/monitoring/inbound").json()["results"]
    assert row["from_address"] == f"whatsapp:{phone_mask(PHONE)}" and not _holds_person(row["body"])
    (whole,) = staff_api.get("/api/v1/monitoring/inbound").json()["results"]
    assert whole["body"] == "call me on 0722 918 364"


def test_segment_samples_are_masked_for_analysts(analyst_api, staff_api, contact):
    query = {"query": 'name = "Wanjiru Kamau"'}
    masked = analyst_api.post("/api/v1/segments/preview", query, format="json").json()
    assert masked["count"] == 1 and not _holds_person(json.dumps(masked["sample"]))
    assert masked["sample"][0]["phone"] == phone_mask(PHONE)
    whole = staff_api.post("/api/v1/segments/preview", query, format="json").json()
    assert whole["sample"][0]["phone"] == PHONE


@pytest.fixture
def import_job():
    job = ImportJob.objects.create(
        source="api", file_path="", file_name="list.csv", status="succeeded", details={"columns": {"phone": "phone"}}
    )
    for line, column, value in [(2, "phone", "0722 918 364"), (3, "email", EMAIL), (4, "Full Name", NAME)]:
        ImportRowError.objects.create(job=job, line=line, column=column, reason="bad", value=value)
    ImportRowError.objects.create(job=job, line=5, column="note", reason="formula", value=f"=call {PHONE}")
    return job


def test_import_problems_are_masked_for_analysts_in_the_api_and_its_csv(analyst_api, staff_api, import_job):
    values = [row["value"] for row in analyst_api.get(f"/api/v1/imports/{import_job.pk}").json()["errors"]]
    assert values == [phone_mask("0722 918 364"), "w***@***.org", "W. K.", "=call +25********64"]
    report = b"".join(analyst_api.get(f"/api/v1/imports/{import_job.pk}/errors").streaming_content).decode()
    assert not _holds_person(report) and "W. K." in report
    whole = b"".join(staff_api.get(f"/api/v1/imports/{import_job.pk}/errors").streaming_content).decode()
    assert EMAIL in whole and NAME in whole


# --- Admin -----------------------------------------------------------------------------------


def _pages(contact, messages, import_job) -> list[str]:
    outbound, inbound = messages
    event = ProviderCallback.objects.create(
        kind="status", provider_sid="SM" + "cd" * 16, status="delivered", message=outbound, payload={"To": PHONE}
    )
    suppression = Suppression.objects.create(
        phone_hash=phone_hash("+254700000001"),
        reason="r",
        source="admin",
        evidence={"note": f"asked by {EMAIL}, {PHONE}"},
    )
    consent = contact.consent_events.get()
    return [
        "/admin/audience/contact/",
        f"/admin/audience/contact/{contact.pk}/change/",
        "/admin/messaging/message/",
        f"/admin/messaging/message/{outbound.pk}/change/",
        f"/admin/messaging/message/{inbound.pk}/change/",
        f"/admin/messaging/providercallback/{event.pk}/change/",
        f"/admin/audience/consentevent/{consent.pk}/change/",
        f"/admin/audience/suppression/{suppression.pk}/change/",
        f"/admin/audience/contact/import/{import_job.pk}/",
        f"/admin/audience/contact/import/{import_job.pk}/errors.csv",
    ]


def _content(response) -> str:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return body.decode()


def test_admin_lists_and_pages_mask_personal_data_for_analysts(analyst_user, staff_user, contact, messages, import_job):
    analyst, staff = _session(analyst_user), _session(staff_user)
    for url in _pages(contact, messages, import_job):
        masked = analyst.get(url)
        assert masked.status_code == 200, url
        assert not _holds_person(_content(masked)), url
        shown = staff.get(url)
        assert shown.status_code == 200 and _holds_person(_content(shown)), url
    assert phone_mask(PHONE) in analyst.get("/admin/audience/contact/").content.decode()


@pytest.mark.parametrize(("index", "name"), [(0, "csv"), (1, "tsv"), (2, "json"), (3, "yaml"), (4, "html")])
def test_admin_exports_in_every_format_are_masked_for_analysts(analyst_user, staff_user, contact, index, name):
    form = {"format": str(index), "resource": "0"}
    form |= {f"contactexportresource_{field}": "on" for field in ("phone", "name", "email", "consent_status")}
    masked = _content(_session(analyst_user).post("/admin/audience/contact/export/", form))
    assert phone_mask(PHONE) in masked and not _holds_person(masked), name
    assert "opted_in" in masked
    assert PHONE in _content(_session(staff_user).post("/admin/audience/contact/export/", form)), name


def test_an_analyst_cannot_edit_a_masked_field_even_with_change_rights(analyst_user, contact):
    analyst_user.user_permissions.add(Permission.objects.get(codename="change_contact"))
    page = _session(analyst_user).get(f"/admin/audience/contact/{contact.pk}/change/").content.decode()
    assert 'name="phone"' not in page and 'name="email"' not in page and 'name="locale"' in page
    assert contact.consent_status == ConsentStatus.OPTED_IN


@pytest.mark.django_db(transaction=True)
def test_who_held_reportings_old_permission_holds_the_one_policys_permission_after_migrating():
    old, new = (
        ("reporting", "0008_counter_status_outcome_unknown"),
        ("reporting", "0009_full_phone_permission_moves_to_audience"),
    )
    executor = MigrationExecutor(connection)
    executor.migrate([old])
    group = Group.objects.create(name="Auditors")
    group.permissions.add(Permission.objects.get(content_type__app_label="reporting", codename="see_full_phone"))

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([new])
    moved = list(group.permissions.values_list("content_type__app_label", "codename"))
    left = Permission.objects.filter(content_type__app_label="reporting", codename="see_full_phone").exists()
    # Back to the latest schema: later tests need the tables of reporting's newer migrations.
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert moved == [("audience", "see_full_phone")]
    assert not left
