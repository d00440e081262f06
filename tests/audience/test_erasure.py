"""Erasing a contact removes what identifies the person and keeps the suppression and the counts."""

import json

import pytest
from django.db import connection

from audience import services as audience
from audience.models import (
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    Contact,
    ContactTopic,
    ImportJob,
    ImportRowError,
    Suppression,
)
from audience.phones import phone_hash
from audience.selectors import phone_consent_history
from campaigns import services as campaigns
from campaigns.models import Recipient
from messaging.models import Message, ProviderCallback
from messaging.services import create
from messaging.services.inbound import inbound_message_record
from reporting import counters
from reporting.selectors import campaign_summary
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience, drain
from tests.factories import TopicFactory

fake = delivery.fake
pytestmark = pytest.mark.django_db

PHONE = delivery.PHONES[0]
NAME = "Wanjiru Kamau"
EMAIL = "wanjiru@example.org"


def _everything_as_text() -> str:
    """Every row of the tables that could hold personal data, as one string to search."""
    tables = [
        "audience_contact",
        "audience_contacttopic",
        "audience_consentevent",
        "audience_importrowerror",
        "messaging_message",
        "messaging_providercallback",
        "campaigns_recipient",
    ]
    dump = []
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT row_to_json(t)::text FROM {table} t")
            dump += [row[0] for row in cursor.fetchall()]
    return "\n".join(dump)


def _personal_traces(text: str) -> list[str]:
    digits = PHONE.lstrip("+")
    return [needle for needle in (digits, digits[-9:], NAME, EMAIL, "Nairobi") if needle in text]


def test_erasing_after_a_campaign_leaves_nothing_personal_and_keeps_the_counts(fake):
    campaign = campaign_with_audience()
    contact = Contact.objects.get(phone=PHONE)
    audience.contact_update(contact, data={"name": NAME, "email": EMAIL, "attributes": {"city": "Nairobi"}})
    ContactTopic.objects.create(contact=contact, topic=TopicFactory(name="news"))
    run = campaigns.campaign_launch(campaign)
    drain(run)
    sent = Message.objects.get(contact=contact)
    ProviderCallback.objects.create(
        kind="status", provider_sid=sent.provider_sid, status="delivered", message=sent, payload={"To": PHONE}
    )
    for n, body in enumerate(["Nairobi here", "STOP"]):
        inbound_message_record(
            provider_sid=f"SM{n:032x}",
            from_address=PHONE,
            to_address="+15005550006",
            body=body,
            payload={"From": PHONE, "Body": body},
        )
    # A free-text message still waiting keeps its body as written until sent: erased too.
    create.message_create(contact=contact, body="See you in Nairobi, {{ name }}", sender=campaign.sender, enqueue=False)
    job = ImportJob.objects.create(source="api", file_path="x.csv", file_name="x.csv")
    ImportRowError.objects.create(job=job, line=2, column="phone", reason="duplicate", value="0" + PHONE[-9:])
    ImportRowError.objects.create(job=job, line=3, column="email", reason="bad", value=EMAIL)
    counters.counters_sync(Message.objects.values_list("pk", flat=True))
    kept_counters = counters.counters_read([run.pk])
    summary_before = campaign_summary(campaign)
    assert _personal_traces(_everything_as_text())  # the check below can fail

    audience.contact_erase(Contact.objects.get(phone=PHONE), actor="dpo")

    assert _personal_traces(_everything_as_text()) == []
    assert not Contact.objects.filter(phone=PHONE).exists()
    assert Suppression.objects.filter(phone_hash=phone_hash(PHONE)).exists()  # it had opted out (STOP)
    assert counters.counters_read([run.pk]) == kept_counters
    assert counters.counters_recounted([run.pk]) == kept_counters
    summary_after = campaign_summary(campaign)
    # Opt-outs within 72 h and replies are matched through the contact, so an erased person no
    # longer counts there; every recipient and message figure stays.
    for figure in ("targeted", "recipients", "skipped", "messages", "failures", "cost", "timeline"):
        assert json.dumps(summary_after[figure], default=str) == json.dumps(summary_before[figure], default=str)
    assert Recipient.objects.filter(run=run).count() == len(delivery.PHONES)
    # The consent audit stays (hash, statuses, times) without its evidence; an erasure event names the events.
    events = ConsentEvent.objects.filter(phone_hash=phone_hash(PHONE))
    evidence = events.filter(kind="change").values_list("evidence", flat=True)
    assert list(evidence) and all(item == {} for item in evidence)
    erasure = events.get(kind="erasure")
    assert sorted(erasure.evidence["erased_events"]) == sorted(
        events.filter(kind="change").values_list("pk", flat=True)
    )


def test_an_erased_phone_that_opted_out_stays_opted_out_when_imported_again():
    contact = audience.contact_create(phone=PHONE, consent_status=ConsentStatus.OPTED_OUT, source=ConsentSource.API)
    audience.contact_erase(contact)
    again = audience.contact_create(phone=PHONE, consent_status=ConsentStatus.OPTED_IN)
    assert again.consent_status == ConsentStatus.OPTED_OUT


def test_erasing_an_opted_in_contact_keeps_no_suppression():
    contact = audience.contact_create(phone=PHONE, name=NAME)
    audience.contact_erase(contact)
    assert not Suppression.objects.exists()
    assert _personal_traces(_everything_as_text()) == []


def test_erasing_mid_run_skips_the_waiting_recipient_and_the_run_still_completes(fake):
    run = campaigns.campaign_launch(campaign_with_audience())
    audience.contact_erase(Contact.objects.get(phone=PHONE))
    recipient = Recipient.objects.get(run=run, contact_id__isnull=False, detail="contact erased")
    assert recipient.state == "skipped"
    drain(run)
    assert fake.requests_to(PHONE) == 0
    assert_counts_match_recount(run)
    run.refresh_from_db()
    assert run.status == "completed" and run.sent == len(delivery.PHONES) - 1


def test_the_api_delete_erases(staff_api):
    contact = audience.contact_create(phone=PHONE, name=NAME, email=EMAIL)
    inbound_message_record(
        provider_sid="SM" + "e2" * 16, from_address=PHONE, to_address="+15005550006", body="hello", payload={}
    )
    assert staff_api.delete(f"/api/v1/contacts/{contact.pk}/").status_code == 204
    message = Message.objects.get()
    assert (message.body, message.from_address, message.contact_id) == ("", "", None)


def test_the_admin_erase_action_erases_the_selected_contacts(client, staff_user):
    first = audience.contact_create(phone=PHONE, name=NAME)
    second = audience.contact_create(phone=delivery.PHONES[1])
    client.force_login(staff_user)
    response = client.post(
        "/admin/audience/contact/",
        {"action": "erase", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "2 contact(s) erased" in response.content.decode()
    assert not Contact.objects.exists()


def test_a_phone_consent_history_includes_what_an_erased_contact_left():
    erased = audience.contact_create(phone=PHONE, source=ConsentSource.API)
    audience.consent_change(erased, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD)
    audience.contact_erase(erased)
    again = audience.contact_create(phone=PHONE, consent_status=ConsentStatus.OPTED_IN)
    other = audience.contact_create(phone=delivery.PHONES[1], source=ConsentSource.API)
    audience.contact_erase(other)

    history = list(phone_consent_history(PHONE))

    assert [(event.contact_id, event.kind) for event in history] == [
        (again.pk, "change"),
        (None, "erasure"),
        (None, "change"),
        (None, "change"),
    ]
    assert {event.phone_hash for event in history} == {phone_hash(PHONE)}
    assert [event.to_status for event in history][2:] == [ConsentStatus.OPTED_OUT, ConsentStatus.OPTED_IN]


def test_the_consent_event_admin_finds_an_erased_phone_by_number(client, staff_user):
    contact = audience.contact_create(phone=PHONE, source=ConsentSource.API)
    audience.contact_erase(contact)
    audience.contact_erase(audience.contact_create(phone=delivery.PHONES[1], source=ConsentSource.API))
    client.force_login(staff_user)

    found = client.get("/admin/audience/consentevent/", {"q": PHONE}).context["cl"].result_list
    missed = client.get("/admin/audience/consentevent/", {"q": "+254700000000"}).context["cl"].result_list

    assert [(event.phone_hash, event.kind) for event in found] == [
        (phone_hash(PHONE), "erasure"),
        (phone_hash(PHONE), "change"),
    ]
    assert list(missed) == []


def test_only_events_without_a_contact_are_in_the_phone_hash_index():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'audience_consentevent'")
        definitions = [row[0] for row in cursor.fetchall()]
    hashed = [definition for definition in definitions if "phone_hash" in definition]
    assert hashed == [
        "CREATE INDEX consentevent_orphan_phone_hash ON public.audience_consentevent "
        "USING hash (phone_hash) WHERE (contact_id IS NULL)"
    ]
