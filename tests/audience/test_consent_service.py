import pytest

from audience import services
from audience.models import ConsentEvent, ConsentSource, ConsentStatus, Contact, Suppression
from audience.phones import phone_hash

pytestmark = pytest.mark.django_db


def make_contact(**kwargs):
    return services.contact_create(phone=kwargs.pop("phone", "+254712345678"), actor="test", **kwargs)


def test_creating_a_contact_audits_its_initial_consent():
    contact = make_contact(source=ConsentSource.IMPORT)
    event = ConsentEvent.objects.get(contact=contact)
    assert (event.from_status, event.to_status, event.source, event.actor) == ("", "opted_in", "import", "test")
    assert contact.opted_in_at is not None and contact.opted_out_at is None


def test_opting_out_writes_an_audit_row_with_evidence():
    contact = make_contact()
    changed = services.consent_change(
        contact,
        to_status=ConsentStatus.OPTED_OUT,
        source=ConsentSource.KEYWORD,
        actor="inbound",
        evidence={"message_sid": "SM123"},
    )
    assert changed is True
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_OUT
    assert contact.opted_out_at is not None
    event = ConsentEvent.objects.filter(contact=contact).first()
    assert (event.from_status, event.to_status, event.source) == ("opted_in", "opted_out", "keyword")
    assert event.evidence == {"message_sid": "SM123"}
    assert event.phone_hash == phone_hash(contact.phone)


def test_a_change_to_the_same_status_writes_nothing():
    contact = make_contact()
    before = ConsentEvent.objects.count()
    assert services.consent_change(contact, to_status=ConsentStatus.OPTED_IN, source=ConsentSource.API) is False
    assert ConsentEvent.objects.count() == before


def test_unknown_status_or_source_is_refused():
    contact = make_contact()
    with pytest.raises(services.ContactError, match="not one of"):
        services.consent_change(contact, to_status="maybe", source=ConsentSource.API)
    with pytest.raises(services.ContactError, match="not one of"):
        services.consent_change(contact, to_status=ConsentStatus.OPTED_OUT, source="carrier")
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_IN


def test_deleting_an_opted_out_contact_keeps_the_phone_suppressed():
    contact = make_contact()
    services.consent_change(
        contact, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD, evidence={"message_sid": "SM9"}
    )
    services.contact_delete(contact, actor="admin")
    assert not Contact.objects.filter(phone="+254712345678").exists()
    suppression = Suppression.objects.get(phone_hash=phone_hash("+254712345678"))
    assert suppression.source == ConsentSource.KEYWORD
    assert suppression.evidence["evidence"] == {"message_sid": "SM9"}
    # The audit trail survives the contact.
    assert ConsentEvent.objects.filter(phone_hash=phone_hash("+254712345678"), to_status="opted_out").exists()


def test_a_suppressed_phone_comes_back_opted_out_and_cannot_be_silently_opted_in():
    contact = make_contact()
    services.consent_change(contact, to_status=ConsentStatus.OPTED_OUT, source=ConsentSource.API)
    services.contact_delete(contact)
    again = make_contact(consent_status=ConsentStatus.OPTED_IN)
    assert again.consent_status == ConsentStatus.OPTED_OUT
    with pytest.raises(services.ContactError, match="suppression list"):
        services.consent_change(again, to_status=ConsentStatus.OPTED_IN, source=ConsentSource.IMPORT)
    # The person's own opt-in keyword lifts the suppression.
    assert services.consent_change(
        again,
        to_status=ConsentStatus.OPTED_IN,
        source=ConsentSource.KEYWORD,
        evidence={"message_sid": "SM1"},
    )
    assert not Suppression.objects.exists()


def test_deleting_an_opted_in_contact_leaves_no_suppression():
    services.contact_delete(make_contact())
    assert not Suppression.objects.exists()


def test_attributes_merge_and_null_removes_a_key():
    contact = make_contact(attributes={"city": "Nairobi", "age": 30, "vip": True})
    services.contact_update(contact, data={"attributes": {"age": 31, "vip": None, "joined": "2026-01-02"}})
    contact.refresh_from_db()
    assert contact.attributes == {"city": "Nairobi", "age": 31, "joined": "2026-01-02"}
    assert isinstance(contact.attributes["age"], int)


def test_bad_fields_are_refused_with_the_field_named():
    with pytest.raises(services.ContactError) as raised:
        make_contact(phone="12", timezone="Mars/Base")
    assert set(raised.value.message_dict) == {"phone", "timezone"}
    assert not Contact.objects.exists()


def test_deleting_a_contact_keeps_its_consent_audit_and_drops_its_topic_links():
    # Neither table has a database FK to the contact (bulk imports write millions of rows); Django
    # sets the audit rows' contact to NULL and deletes the topic links.
    from audience.models import ContactTopic, Topic

    contact = make_contact(topics=[Topic.objects.create(name="alerts")])
    services.contact_delete(contact)
    left = ConsentEvent.objects.filter(contact__isnull=True, phone_hash=phone_hash("+254712345678"))
    assert list(left.order_by("seq").values_list("kind", flat=True)) == ["change", "erasure"]
    assert not ContactTopic.objects.exists()
