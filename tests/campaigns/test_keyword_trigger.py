"""Inbound keywords fire triggered campaigns: JOIN adds the topic and sends one welcome; STOP stays messaging's."""

import pytest

from audience import services as audience
from audience.models import ConsentSource, ConsentStatus, Contact
from campaigns import services
from campaigns.models import Campaign, CampaignRun, Event, Recipient
from messaging.models import MessageTemplate
from messaging.services.inbound import inbound_message_record
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience, drain
from tests.twilio_webhooks import INBOUND_PATH, PUBLIC, inbound_payload, post_form

fake = delivery.fake
pytestmark = pytest.mark.django_db

PHONE = delivery.PHONES[0]


@pytest.fixture
def welcome() -> Campaign:
    base = campaign_with_audience(phones=[PHONE])
    topic = audience.topic_get_or_create("news")
    template = MessageTemplate.objects.create(
        name="welcome", channel="sms", body="Welcome to {{ event.keyword }} news, {{ name }}! Reply STOP to stop."
    )
    campaign = services.campaign_create(
        name="Welcome", kind="triggered", template=template, sender=base.sender, topic=topic, trigger_keyword="join"
    )
    services.campaign_launch(campaign)
    return campaign


def receive(body: str, n: int = 1, phone: str = PHONE):
    sid = f"SM{n:032x}"
    payload = inbound_payload(sid, body, phone=phone)
    return inbound_message_record(
        provider_sid=sid, from_address=payload["From"], to_address=payload["To"], body=body, payload=payload
    )


def run_of(campaign) -> CampaignRun:
    return CampaignRun.objects.get(campaign=campaign)


def topics(phone=PHONE) -> list[str]:
    return sorted(Contact.objects.get(phone=phone).topics.values_list("name", flat=True))


def test_join_adds_the_topic_and_sends_exactly_one_welcome(fake, welcome, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        receive("JOIN")
        receive("JOIN", n=1)  # the same inbound message delivered twice: recorded and answered once
    assert topics() == ["news"]
    run = run_of(welcome)
    drain(run)
    assert fake.requests_to(PHONE) == 1
    assert [m["body"] for m in fake.messages()] == ["Welcome to JOIN news, C01! Reply STOP to stop."]
    event = Event.objects.get()
    assert (event.name, event.properties, list(event.matched_campaigns.all())) == (
        "keyword",
        {"keyword": "JOIN"},
        [welcome],
    )
    assert Recipient.objects.get(event=event).state == "sent"
    assert_counts_match_recount(run)


def test_a_replayed_keyword_is_answered_when_the_first_delivery_died_before_answering(
    fake, welcome, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):  # committed; the process died before the receivers
        receive("JOIN")
    assert not Event.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):  # Twilio retries the webhook
        receive("JOIN")
        receive("JOIN")
    drain(run_of(welcome))
    assert Event.objects.count() == 1 and fake.requests_to(PHONE) == 1
    assert_counts_match_recount(run_of(welcome))


def test_join_through_the_signed_webhook(fake, welcome, client, settings, django_capture_on_commit_callbacks):
    settings.PUBLIC_BASE_URL = PUBLIC
    with django_capture_on_commit_callbacks(execute=True):
        response = post_form(
            client, INBOUND_PATH, inbound_payload("SM" + "c3" * 16, " join! ", phone=PHONE), token=delivery.TOKEN
        )
    assert response.status_code == 200
    drain(run_of(welcome))
    assert topics() == ["news"] and fake.requests_to(PHONE) == 1


@pytest.mark.parametrize("text", ["join", " Join ", "JOIN.", "jOiN!"])
def test_the_keyword_is_case_insensitive(welcome, text, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        receive(text)
    assert Event.objects.filter(name="keyword").count() == 1 and topics() == ["news"]


@pytest.mark.parametrize("text", ["join now", "I want to join", "joinn", "JOIN?", ""])
def test_the_keyword_must_be_the_whole_message(welcome, text, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        receive(text)
    assert not Event.objects.exists() and topics() == []
    assert run_of(welcome).total == 0


@pytest.mark.parametrize("text", ["STOP", "stop", "START", "HELP", "unsubscribe"])
def test_consent_and_help_keywords_never_fire_a_campaign_even_for_an_opted_out_contact(
    welcome, text, django_capture_on_commit_callbacks
):
    contact = Contact.objects.get(phone=PHONE)
    audience.consent_change(contact, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.API, actor="test")
    with django_capture_on_commit_callbacks(execute=True):
        receive(text)
    assert not Event.objects.exists() and not Recipient.objects.exists()
    assert run_of(welcome).total == 0


def test_an_opted_out_contact_texting_join_gets_the_topic_but_no_message(
    fake, welcome, django_capture_on_commit_callbacks
):
    contact = Contact.objects.get(phone=PHONE)
    audience.consent_change(contact, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.API, actor="test")
    with django_capture_on_commit_callbacks(execute=True):
        receive("JOIN")
    recipient = Recipient.objects.get()
    assert (recipient.state, recipient.reason) == ("skipped", "opted_out")
    drain(run_of(welcome))
    assert fake.requests_to(PHONE) == 0 and topics() == ["news"]
    assert_counts_match_recount(run_of(welcome))


def test_a_paused_keyword_campaign_does_not_answer(welcome, django_capture_on_commit_callbacks):
    services.campaign_pause(welcome)
    with django_capture_on_commit_callbacks(execute=True):
        receive("JOIN")
    assert not Event.objects.exists() and topics() == []
