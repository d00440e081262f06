"""Inbound keywords: exact single words opt out, opt in or ask for help; everything else is text."""

import pytest

from audience.models import ConsentEvent, ConsentSource, ConsentStatus, Contact, Suppression
from audience.phones import phone_hash
from audience.services import contact_delete
from messaging.keywords import Keyword, keyword_parse
from messaging.models import Direction, Message, MessageStatus, ProviderCallback
from messaging.services.inbound import inbound_message_record
from messaging.signals import inbound_message_received
from tests.factories import ContactFactory
from tests.twilio_webhooks import BUSINESS_SMS, inbound_payload

PHONE = "+254712345678"
OPT_OUT = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT", "OPT-OUT"]
OPT_OUT += ["ARRET", "ARRÊT"]
OPT_IN = ["START", "YES", "UNSTOP"]
HELP = ["HELP", "INFO"]


@pytest.mark.parametrize(
    ("text", "meaning"),
    [(word, Keyword.STOP) for word in OPT_OUT]
    + [(word, Keyword.START) for word in OPT_IN]
    + [(word, Keyword.HELP) for word in HELP]
    + [(" Stop ", Keyword.STOP), ("stop", Keyword.STOP), ("\tUnSubscribe\n", Keyword.STOP), ("STOP.", Keyword.STOP)]
    + [("Stop!", Keyword.STOP), ("yes", Keyword.START), ("help ", Keyword.HELP), ("Info.", Keyword.HELP)],
)
def test_keywords_are_single_words_trimmed_and_case_insensitive(text, meaning):
    assert keyword_parse(text)[0] == meaning


@pytest.mark.parametrize(
    "text",
    [
        "stop please",
        "stopp",
        "please stop",
        "STOP STOP",
        "st op",
        "¿STOP",
        "Please STOP sending these",
        "I said stop.",
        "opt out please",
        "OPT OUT OUT",
        "ARRETE",
        "STOP 🙏",
        "unsubscribe me",
        "yes please",
        "",
        "   ",
        None,
    ],
)
def test_near_misses_are_plain_text(text):
    assert keyword_parse(text) is None


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("ARRET", "ARRET"),
        ("ARRÊT", "ARRÊT"),
        ("arrêt", "ARRÊT"),
        ("ARRE\u0302T", "ARRÊT"),  # Ê written as E and a combining circumflex
        ("opt out", "OPT OUT"),
        ("Opt \u00a0 Out", "OPT OUT"),  # a non-breaking space among others
        ("OPT-OUT", "OPT-OUT"),
        ("opt\u2011out", "OPT-OUT"),  # a non-breaking hyphen
        ("ＳＴＯＰ", "STOP"),  # full-width letters
        ("\u200bSTOP", "STOP"),  # a zero-width space before it
        ("ST\u200dOP\ufeff", "STOP"),
        ("\u2060stop\u2060", "STOP"),
        ("Stop?", "STOP"),
        ("STOP?!", "STOP"),
        ("stop …", "STOP"),
        ("ＳＴＯＰ！", "STOP"),
    ],
)
def test_opt_out_keywords_are_compared_after_unicode_normalisation(text, keyword):
    assert keyword_parse(text) == (Keyword.STOP, keyword)


def receive(body: str, sid: str = "SM" + "b2" * 16, phone: str = PHONE, whatsapp: bool = False) -> Message:
    payload = inbound_payload(sid, body, phone=phone, whatsapp=whatsapp)
    return inbound_message_record(
        provider_sid=sid, from_address=payload["From"], to_address=payload["To"], body=body, payload=payload
    )


@pytest.mark.django_db
@pytest.mark.parametrize("word", OPT_OUT)
def test_every_opt_out_keyword_opts_the_contact_out_with_the_message_as_evidence(word):
    contact = ContactFactory(phone=PHONE, consent_status=ConsentStatus.OPTED_IN)
    message = receive(word.lower())
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_OUT
    event = ConsentEvent.objects.get(contact=contact)
    assert (event.from_status, event.to_status, event.source) == ("opted_in", "opted_out", ConsentSource.KEYWORD)
    assert event.evidence == {"message_sid": message.provider_sid, "keyword": word}


@pytest.mark.django_db
@pytest.mark.parametrize("word", OPT_IN)
def test_every_opt_in_keyword_opts_the_contact_back_in(word):
    contact = ContactFactory(phone=PHONE, consent_status=ConsentStatus.OPTED_OUT)
    message = receive(f" {word.capitalize()} ")
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_IN
    event = ConsentEvent.objects.get(contact=contact)
    assert (event.to_status, event.source) == ("opted_in", ConsentSource.KEYWORD)
    assert event.evidence == {"message_sid": message.provider_sid, "keyword": word}


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["ARRÊT", "opt out", "OPT-OUT", "ＳＴＯＰ", "\u200bSTOP", "Stop?"])
def test_the_spellings_carriers_honour_opt_the_contact_out(text):
    contact = ContactFactory(phone=PHONE, consent_status=ConsentStatus.OPTED_IN)
    receive(text)
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_OUT
    assert ConsentEvent.objects.get(contact=contact).evidence["keyword"] == keyword_parse(text)[1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text", ["stop please", "stopp", "HELP", "info", "Hello there", "Please STOP sending me these", "Don't stop!"]
)
def test_other_messages_leave_consent_alone(text):
    contact = ContactFactory(phone=PHONE, consent_status=ConsentStatus.OPTED_IN)
    message = receive(text)
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_IN
    assert not ConsentEvent.objects.exists()
    assert message.body == text and message.contact == contact


@pytest.mark.django_db
def test_a_replayed_stop_acts_once_and_returns_the_same_message():
    contact = ContactFactory(phone=PHONE, consent_status=ConsentStatus.OPTED_IN)
    first = receive("STOP")
    again = receive("STOP")
    assert again.pk == first.pk
    assert Message.objects.count() == 1
    assert ProviderCallback.objects.count() == 1
    assert ConsentEvent.objects.filter(contact=contact).count() == 1


@pytest.mark.django_db
def test_an_inbound_message_is_stored_and_touches_the_contact():
    contact = ContactFactory(phone=PHONE)
    assert contact.last_inbound_at is None
    message = receive("Is the shop open on Sunday?")
    contact.refresh_from_db()
    assert contact.last_inbound_at == message.received_at
    assert (message.direction, message.status, message.channel) == (Direction.INBOUND, MessageStatus.RECEIVED, "sms")
    assert (message.from_address, message.to_address) == (PHONE, BUSINESS_SMS)
    event = ProviderCallback.objects.get(provider_sid=message.provider_sid)
    assert (event.kind, event.status, event.message_id) == ("inbound", "received", message.pk)
    assert event.payload["Body"] == "Is the shop open on Sunday?" and event.applied_at is not None


@pytest.mark.django_db
def test_an_unknown_whatsapp_sender_becomes_a_contact_without_consent():
    message = receive("hi", phone="+254733000123", whatsapp=True)
    contact = Contact.objects.get(phone="+254733000123")
    assert message.contact == contact and message.channel == "whatsapp"
    assert contact.channel == "whatsapp" and contact.last_inbound_at is not None
    assert contact.consent_status == ConsentStatus.OPTED_OUT  # writing to us is not consent to campaigns
    event = ConsentEvent.objects.get(contact=contact)
    assert event.source == ConsentSource.PROVIDER
    assert event.evidence == {"message_sid": message.provider_sid, "first_inbound": True}


@pytest.mark.django_db
def test_an_unknown_sender_saying_start_is_created_then_opted_in():
    message = receive("START", phone="+254733000124")
    contact = Contact.objects.get(phone="+254733000124")
    assert contact.consent_status == ConsentStatus.OPTED_IN
    assert list(contact.consent_events.order_by("id").values_list("to_status", "source")) == [
        ("opted_out", "provider"),
        ("opted_in", "keyword"),
    ]
    assert contact.consent_events.get(source="keyword").evidence["message_sid"] == message.provider_sid


@pytest.mark.django_db
def test_an_unknown_sender_saying_stop_is_created_opted_out_by_the_keyword():
    message = receive("stop", phone="+254733000125")
    event = ConsentEvent.objects.get(contact__phone="+254733000125")
    assert (event.to_status, event.source) == ("opted_out", ConsentSource.KEYWORD)
    assert event.evidence == {"message_sid": message.provider_sid, "keyword": "STOP", "first_inbound": True}


@pytest.mark.django_db
def test_start_lifts_the_suppression_of_a_deleted_opted_out_phone():
    contact = ContactFactory(phone=PHONE, consent_status=ConsentStatus.OPTED_OUT)
    contact_delete(contact)
    assert Suppression.objects.filter(phone_hash=phone_hash(PHONE)).exists()
    receive("UNSTOP")
    assert Contact.objects.get(phone=PHONE).consent_status == ConsentStatus.OPTED_IN
    assert not Suppression.objects.filter(phone_hash=phone_hash(PHONE)).exists()


@pytest.mark.django_db
def test_media_are_stored_from_the_numbered_fields():
    sid = "SM" + "c3" * 16
    payload = inbound_payload(
        sid,
        "",
        NumMedia="2",
        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME1",
        MediaContentType0="image/jpeg",
        MediaUrl1="https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME2",
        MediaContentType1="application/pdf",
    )
    message = inbound_message_record(
        provider_sid=sid, from_address=payload["From"], to_address=payload["To"], body="", payload=payload
    )
    assert message.num_media == 2
    assert [m["content_type"] for m in message.media] == ["image/jpeg", "application/pdf"]
    assert message.media[1]["url"].endswith("/ME2")


@pytest.mark.django_db
def test_a_sender_that_is_not_a_phone_keeps_the_message_without_a_contact():
    message = inbound_message_record(
        provider_sid="SM" + "d4" * 16, from_address="MyBrand", to_address=BUSINESS_SMS, body="STOP", payload={}
    )
    assert message.contact is None and not Contact.objects.exists()


@pytest.mark.django_db
def test_inbound_is_signalled_after_commit_with_its_keyword(django_capture_on_commit_callbacks):
    ContactFactory(phone=PHONE)
    received = []

    def receiver(sender, **kwargs):
        received.append((kwargs["message_id"], kwargs["keyword"]))

    inbound_message_received.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            stop = receive("Stop", sid="SM" + "e5" * 16)
            text = receive("thanks", sid="SM" + "f6" * 16)
            replay = receive("Stop", sid="SM" + "e5" * 16)  # Twilio again: signalled again, receivers are idempotent
            assert received == []
    finally:
        inbound_message_received.disconnect(receiver)
    assert replay.pk == stop.pk
    assert received == [(stop.pk, "stop"), (text.pk, None), (stop.pk, "stop")]
