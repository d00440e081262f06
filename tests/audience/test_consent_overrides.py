"""Opting someone back in after a STOP, a provider opt-out or a suppression needs evidence, through every door."""

import re

import pytest

from audience import services
from audience.models import ConsentEvent, ConsentEventKind, ConsentSource, ConsentStatus, Contact, Suppression
from audience.phones import phone_hash
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PHONE = "+254712345678"
EVIDENCE = {"document": "signed form SF-2026-0113", "reason": "Came to the shop and signed up again"}


def opted_out_by(source: str, phone: str = PHONE, **evidence) -> Contact:
    contact = services.contact_create(phone=phone, source=ConsentSource.API, actor="test")
    services.consent_change(contact, to_status=ConsentStatus.OPTED_OUT, source=source, evidence=evidence)
    contact.refresh_from_db()
    return contact


def suppressed_contact(phone: str = PHONE) -> Contact:
    """A phone that opted out, was erased, and came back: it stays opted out by the suppression list."""
    services.contact_delete(opted_out_by(ConsentSource.API, phone))
    contact = services.contact_create(phone=phone, source=ConsentSource.API, actor="test")
    assert contact.consent_status == ConsentStatus.OPTED_OUT
    return contact


def last_event(contact: Contact) -> ConsentEvent:
    return ConsentEvent.objects.filter(contact=contact).order_by("-id").first()


# --- the service -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "origin"),
    [
        (lambda: opted_out_by(ConsentSource.KEYWORD, message_sid="SM1", keyword="STOP"), "keyword"),
        (lambda: opted_out_by(ConsentSource.PROVIDER, error_code="21610"), "provider"),
        (suppressed_contact, "suppression"),
    ],
)
def test_opting_in_after_a_stop_the_provider_or_a_suppression_needs_a_document_and_a_reason(make, origin):
    contact = make()
    before = ConsentEvent.objects.count()
    with pytest.raises(services.ConsentEvidenceRequired) as refused:
        services.consent_change(contact, to_status=ConsentStatus.OPTED_IN, source=ConsentSource.API, actor="staff")
    assert set(refused.value.message_dict) == {"document", "reason"}
    assert refused.value.origin == origin
    with pytest.raises(services.ConsentEvidenceRequired) as refused:
        services.consent_change(
            contact,
            to_status=ConsentStatus.OPTED_IN,
            source=ConsentSource.ADMIN,
            actor="staff",
            evidence={"document": "  ", "reason": "asked on the phone"},
        )
    assert set(refused.value.message_dict) == {"document"}
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_OUT and ConsentEvent.objects.count() == before

    assert services.consent_change(
        contact, to_status=ConsentStatus.OPTED_IN, source=ConsentSource.API, actor="staff", evidence=EVIDENCE
    )
    contact.refresh_from_db()
    event = last_event(contact)
    assert contact.consent_status == ConsentStatus.OPTED_IN
    assert (event.actor, event.source, event.to_status) == ("staff", "api", "opted_in")
    assert event.evidence["document"] == EVIDENCE["document"] and event.evidence["reason"] == EVIDENCE["reason"]
    assert event.evidence["overrides"] == origin


def test_an_override_is_recorded_under_a_users_name():
    contact = opted_out_by(ConsentSource.KEYWORD)
    with pytest.raises(services.ConsentEvidenceRequired) as refused:
        services.consent_change(contact, to_status=ConsentStatus.OPTED_IN, source=ConsentSource.API, evidence=EVIDENCE)
    assert set(refused.value.message_dict) == {"actor"}


def test_an_import_or_the_provider_never_overrides_a_stop():
    contact = opted_out_by(ConsentSource.KEYWORD)
    for source in (ConsentSource.IMPORT, ConsentSource.PROVIDER):
        with pytest.raises(services.ConsentEvidenceRequired, match="only staff"):
            services.consent_change(
                contact, to_status=ConsentStatus.OPTED_IN, source=source, actor="x", evidence=EVIDENCE
            )


def test_the_persons_own_start_needs_no_document():
    contact = opted_out_by(ConsentSource.KEYWORD)
    assert services.consent_change(
        contact, to_status=ConsentStatus.OPTED_IN, source=ConsentSource.KEYWORD, evidence={"message_sid": "SM2"}
    )
    assert last_event(contact).evidence == {"message_sid": "SM2"}


def test_an_opt_out_staff_recorded_can_be_undone_without_a_document():
    contact = opted_out_by(ConsentSource.ADMIN)
    assert services.consent_change(contact, to_status=ConsentStatus.OPTED_IN, source=ConsentSource.ADMIN, actor="s")


def test_an_evidenced_opt_in_lifts_the_suppression_and_the_audit_row_says_so():
    contact = suppressed_contact()
    entry = Suppression.objects.get()
    services.consent_change(
        contact, to_status=ConsentStatus.OPTED_IN, source=ConsentSource.API, actor="staff", evidence=EVIDENCE
    )
    assert not Suppression.objects.exists()
    lifted = last_event(contact).evidence["lifted_suppression"]
    assert lifted == {
        "id": entry.pk,
        "reason": entry.reason,
        "source": entry.source,
        "created_at": entry.created_at.isoformat(),
    }


def test_lifting_a_suppression_entry_needs_evidence_and_is_audited():
    services.contact_delete(opted_out_by(ConsentSource.KEYWORD))
    entry = Suppression.objects.get()
    with pytest.raises(services.ConsentEvidenceRequired) as refused:
        services.suppression_lift(entry, actor="staff", evidence={"reason": "asked"})
    assert set(refused.value.message_dict) == {"document"}
    assert Suppression.objects.exists()
    services.suppression_lift(entry, actor="staff", evidence=EVIDENCE)
    assert not Suppression.objects.exists()
    event = ConsentEvent.objects.get(kind=ConsentEventKind.SUPPRESSION_LIFTED)
    assert (event.contact_id, event.phone_hash, event.actor) == (None, phone_hash(PHONE), "staff")
    assert event.evidence["document"] == EVIDENCE["document"] and event.evidence["lifted_suppression"]["id"] == entry.pk
    # The phone is no longer suppressed; its new contact can be opted in without an override.
    assert services.contact_create(phone=PHONE).consent_status == ConsentStatus.OPTED_IN


# --- the API -----------------------------------------------------------------------------------


def test_the_api_refuses_an_opt_in_of_a_suppressed_phone_without_evidence_and_keeps_the_entry(staff_api):
    contact = suppressed_contact()
    response = staff_api.post(f"/api/v1/contacts/{contact.pk}/consent", {"status": "opted_in"}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"document", "reason"}
    assert "suppression list" in response.json()["document"][0]
    assert Suppression.objects.count() == 1
    assert Contact.objects.get(pk=contact.pk).consent_status == ConsentStatus.OPTED_OUT


def test_the_api_records_the_evidence_it_was_given(staff_api):
    contact = opted_out_by(ConsentSource.KEYWORD)
    response = staff_api.post(
        f"/api/v1/contacts/{contact.pk}/consent",
        {"status": "opted_in", **EVIDENCE, "evidence": {"ticket": "T-9"}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    event = last_event(contact)
    assert event.evidence == {**EVIDENCE, "ticket": "T-9", "overrides": "keyword"}
    assert event.actor == "staff"
    history = staff_api.get(f"/api/v1/contacts/{contact.pk}/consent-history").json()
    assert history[0]["evidence"]["document"] == EVIDENCE["document"] and history[0]["kind"] == "change"


def test_the_api_takes_the_document_and_reason_inside_evidence_too(staff_api):
    contact = opted_out_by(ConsentSource.PROVIDER)
    response = staff_api.post(
        f"/api/v1/contacts/{contact.pk}/consent", {"status": "opted_in", "evidence": EVIDENCE}, format="json"
    )
    assert response.status_code == 200, response.json()


def test_the_api_refuses_evidence_that_is_not_an_object(staff_api):
    contact = opted_out_by(ConsentSource.ADMIN)
    response = staff_api.post(
        f"/api/v1/contacts/{contact.pk}/consent", {"status": "opted_in", "evidence": [1]}, format="json"
    )
    assert response.status_code == 400 and "evidence" in response.json()


# --- the admin ---------------------------------------------------------------------------------


@pytest.fixture
def boss(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    return client


def test_bulk_opt_in_refuses_the_contacts_that_need_evidence_and_names_them(boss):
    stopped = opted_out_by(ConsentSource.KEYWORD, phone="+254712345601")
    carrier = opted_out_by(ConsentSource.PROVIDER, phone="+254712345602")
    by_staff = opted_out_by(ConsentSource.ADMIN, phone="+254712345603")
    response = boss.post(
        "/admin/audience/contact/",
        {"action": "opt_in", "_selected_action": [stopped.pk, carrier.pk, by_staff.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "1 contact(s) changed to Opted in." in page
    assert "2 contact(s) were not opted in" in page
    assert f'/admin/audience/contact/{stopped.pk}/change/">#{stopped.pk}</a> (a STOP keyword)' in page
    assert f'/admin/audience/contact/{carrier.pk}/change/">#{carrier.pk}</a> (the provider' in page
    statuses = dict(Contact.objects.values_list("pk", "consent_status"))
    assert statuses == {stopped.pk: "opted_out", carrier.pk: "opted_out", by_staff.pk: "opted_in"}
    assert last_event(by_staff).evidence == {"door": "admin action"}


def _change_form_data(response) -> dict:
    """What the browser would send back from the contact's change page, untouched."""
    data = {}
    form = response.context["adminform"].form
    for name in form.fields:
        value = form[name].value()
        if value is not None:
            data[name] = value
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for key, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{key}"] = value
        for each in formset.forms:
            for name in each.fields:
                value = each[name].value()
                if value is not None:
                    data[each.add_prefix(name)] = value
    return data


def test_the_contact_form_shows_the_missing_evidence_on_its_fields(boss):
    contact = opted_out_by(ConsentSource.KEYWORD)
    url = f"/admin/audience/contact/{contact.pk}/change/"
    data = {**_change_form_data(boss.get(url)), "consent_change": "opted_in"}
    response = boss.post(url, data)
    assert response.status_code == 200  # the form again, with errors
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"consent_document", "consent_reason"}
    assert "STOP keyword" in errors["consent_document"][0]
    assert Contact.objects.get(pk=contact.pk).consent_status == ConsentStatus.OPTED_OUT

    data.update(consent_document=EVIDENCE["document"], consent_reason=EVIDENCE["reason"])
    response = boss.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    event = last_event(contact)
    assert Contact.objects.get(pk=contact.pk).consent_status == ConsentStatus.OPTED_IN
    assert event.actor == "boss" and event.source == "admin"
    assert event.evidence == {"door": "admin form", **EVIDENCE, "overrides": "keyword"}


def test_the_contact_form_can_opt_out_with_a_reason(boss):
    contact = services.contact_create(phone=PHONE)
    url = f"/admin/audience/contact/{contact.pk}/change/"
    data = {**_change_form_data(boss.get(url)), "consent_change": "opted_out", "consent_reason": "asked by email"}
    assert boss.post(url, data).status_code == 302
    assert last_event(contact).evidence == {"door": "admin form", "reason": "asked by email"}


def test_analysts_see_the_contact_page_without_the_consent_form(client):
    from config.roles import ANALYSTS

    client.force_login(UserFactory(username="reader", role=ANALYSTS))
    contact = opted_out_by(ConsentSource.KEYWORD)
    page = client.get(f"/admin/audience/contact/{contact.pk}/change/")
    assert page.status_code == 200 and 'name="consent_change"' not in page.content.decode()


def test_deleting_a_suppression_entry_in_the_admin_asks_for_evidence_and_audits_it(boss):
    services.contact_delete(opted_out_by(ConsentSource.KEYWORD))
    entry = Suppression.objects.get()
    url = f"/admin/audience/suppression/{entry.pk}/delete/"
    page = boss.get(url).content.decode()
    assert 'name="document"' in page and 'name="reason"' in page
    response = boss.post(url, {"document": "", "reason": "asked"})
    assert response.status_code == 200 and Suppression.objects.exists()
    assert re.search(r"required: a reference to the signed form", response.content.decode())
    response = boss.post(url, EVIDENCE)
    assert response.status_code == 302 and not Suppression.objects.exists()
    event = ConsentEvent.objects.get(kind=ConsentEventKind.SUPPRESSION_LIFTED)
    assert event.actor == "boss" and event.evidence["reason"] == EVIDENCE["reason"]
    assert event.evidence["door"] == "admin"


def test_the_suppression_list_offers_no_bulk_delete(boss):
    services.contact_delete(opted_out_by(ConsentSource.KEYWORD))
    page = boss.get("/admin/audience/suppression/").content.decode()
    assert "delete_selected" not in page
    entry = Suppression.objects.get()
    boss.post("/admin/audience/suppression/", {"action": "delete_selected", "_selected_action": [entry.pk]})
    assert Suppression.objects.exists()
