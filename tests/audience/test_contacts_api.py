import pytest

from audience import services
from audience.models import ConsentEvent, ConsentStatus, Contact, Suppression
from tests.factories import ContactFactory, TopicFactory

pytestmark = pytest.mark.django_db


def test_anonymous_requests_get_401(anon_api):
    assert anon_api.get("/api/v1/contacts/").status_code == 401
    assert anon_api.post("/api/v1/contacts/", {"phone": "+254712345678"}, format="json").status_code == 401


def test_a_user_without_a_role_is_refused(db):
    from rest_framework.test import APIClient

    from tests.factories import UserFactory

    client = APIClient()
    client.force_authenticate(UserFactory(username="nobody"))
    assert client.get("/api/v1/contacts/").status_code == 403


def test_analysts_read_but_cannot_write(analyst_api):
    contact = ContactFactory()
    assert analyst_api.get("/api/v1/contacts/").status_code == 200
    assert analyst_api.get(f"/api/v1/contacts/{contact.pk}/").status_code == 200
    assert analyst_api.post("/api/v1/contacts/", {"phone": "+254712345678"}, format="json").status_code == 403
    assert analyst_api.patch(f"/api/v1/contacts/{contact.pk}/", {"name": "x"}, format="json").status_code == 403
    assert analyst_api.delete(f"/api/v1/contacts/{contact.pk}/").status_code == 403
    assert (
        analyst_api.post(f"/api/v1/contacts/{contact.pk}/consent", {"status": "opted_out"}, format="json").status_code
        == 403
    )
    assert Contact.objects.get(pk=contact.pk).consent_status == ConsentStatus.OPTED_IN


def test_session_auth_works_too(client, staff_user):
    client.force_login(staff_user)
    assert client.get("/api/v1/contacts/").status_code == 200


def test_create_normalises_the_phone_and_sets_topics(staff_api):
    TopicFactory(name="alerts")
    response = staff_api.post(
        "/api/v1/contacts/",
        {
            "phone": "whatsapp:+254 712 345 678",
            "name": "Amina",
            "channel": "whatsapp",
            "timezone": "Africa/Nairobi",
            "attributes": {"age": 31, "vip": True, "joined": "2026-01-02", "score": 4.5},
            "topics": ["alerts"],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["phone"] == "+254712345678"
    assert body["topics"] == ["alerts"]
    assert body["attributes"] == {"age": 31, "vip": True, "joined": "2026-01-02", "score": 4.5}
    assert ConsentEvent.objects.filter(contact_id=body["id"], source="api", actor="staff").count() == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"phone": "not a phone"}, "phone"),
        ({"phone": "+254712345678", "timezone": "Mars/Base"}, "timezone"),
        ({"phone": "+254712345678", "attributes": [1, 2]}, "attributes"),
        ({"phone": "+254712345678", "topics": ["nope"]}, "topics"),
        ({"phone": "+254712345678", "channel": "fax"}, "channel"),
    ],
)
def test_bad_input_names_the_field(staff_api, payload, field):
    response = staff_api.post("/api/v1/contacts/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Contact.objects.exists()


def test_duplicate_phone_in_another_spelling_is_refused(staff_api):
    ContactFactory(phone="+254712345678")
    response = staff_api.post("/api/v1/contacts/", {"phone": "00254712345678"}, format="json")
    assert response.status_code == 400
    assert "already exists" in str(response.json()["phone"])


def test_partial_update_merges_attributes(staff_api):
    contact = services.contact_create(phone="+254712345678", attributes={"city": "Nairobi", "age": 30})
    response = staff_api.patch(f"/api/v1/contacts/{contact.pk}/", {"attributes": {"age": 31}}, format="json")
    assert response.status_code == 200
    assert response.json()["attributes"] == {"city": "Nairobi", "age": 31}


def test_consent_cannot_be_changed_by_a_plain_update(staff_api):
    contact = services.contact_create(phone="+254712345678")
    response = staff_api.patch(f"/api/v1/contacts/{contact.pk}/", {"consent_status": "opted_out"}, format="json")
    assert response.status_code == 400
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_IN


def test_consent_endpoint_changes_consent_and_audits(staff_api):
    contact = services.contact_create(phone="+254712345678")
    response = staff_api.post(
        f"/api/v1/contacts/{contact.pk}/consent", {"status": "opted_out", "evidence": {"ticket": "T-1"}}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["consent_status"] == "opted_out"
    event = ConsentEvent.objects.filter(contact=contact).first()
    assert (event.to_status, event.source, event.actor, event.evidence) == (
        "opted_out",
        "api",
        "staff",
        {"ticket": "T-1"},
    )
    history = staff_api.get(f"/api/v1/contacts/{contact.pk}/consent-history").json()
    assert [row["to_status"] for row in history] == ["opted_out", "opted_in"]


def test_delete_of_an_opted_out_contact_suppresses_the_phone(staff_api):
    contact = services.contact_create(phone="+254712345678", consent_status=ConsentStatus.OPTED_OUT)
    assert staff_api.delete(f"/api/v1/contacts/{contact.pk}/").status_code == 204
    assert Suppression.objects.count() == 1
    again = staff_api.post("/api/v1/contacts/", {"phone": "+254712345678"}, format="json")
    assert again.status_code == 201
    assert again.json()["consent_status"] == "opted_out"


def test_filters_and_search(staff_api):
    vip = TopicFactory(name="vip")
    a = services.contact_create(phone="+254712345001", name="Amina", channel="whatsapp", locale="sw", topics=[vip])
    services.contact_create(phone="+254712345002", name="Brian", consent_status=ConsentStatus.OPTED_OUT)
    services.contact_create(phone="+254712345003", name="Chen", email="chen@example.com")

    def phones(query):
        response = staff_api.get(f"/api/v1/contacts/?{query}")
        assert response.status_code == 200, response.json()
        return sorted(row["phone"] for row in response.json()["results"])

    assert phones("consent_status=opted_out") == ["+254712345002"]
    assert phones("channel=whatsapp") == [a.phone]
    assert phones("locale=sw") == [a.phone]
    assert phones("topic=vip") == [a.phone]
    assert phones("search=chen@example") == ["+254712345003"]
    assert phones("phone=0712345001&phone=%2B254712345001") == [a.phone]
    assert len(phones("created_after=2000-01-01T00:00:00Z")) == 3
    assert phones("created_before=2000-01-01T00:00:00Z") == []
    assert staff_api.get("/api/v1/contacts/?consent_status=maybe").status_code == 400


def test_cursor_pagination_walks_every_contact_once(staff_api):
    for index in range(7):
        ContactFactory(phone=f"+25471234{index:04d}")
    seen, url = [], "/api/v1/contacts/?page_size=3"
    while url:
        body = staff_api.get(url).json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    assert len(seen) == 7 and len(set(seen)) == 7


def test_topics_crud(staff_api, analyst_api):
    created = staff_api.post("/api/v1/topics/", {"name": "promotions"}, format="json")
    assert created.status_code == 201
    assert staff_api.post("/api/v1/topics/", {"name": "Bad Name!"}, format="json").status_code == 400
    assert analyst_api.get("/api/v1/topics/").json()[0]["name"] == "promotions"
    assert analyst_api.post("/api/v1/topics/", {"name": "x"}, format="json").status_code == 403
