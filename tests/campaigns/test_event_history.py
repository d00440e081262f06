"""A contact's event history: the API (newest first, cursor pages, analysts masked) and the admin."""

import datetime as dt
import uuid

import pytest

from audience import services as audience
from campaigns.admin.event_lists import LATEST_ON_CONTACT, event_names
from campaigns.models import Event
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PHONE = "+254713000001"
OTHER = "+254713000002"
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)


def event(contact, name="order_shipped", minutes=0, **properties) -> Event:
    return Event.objects.create(
        contact=contact,
        name=name,
        properties=properties,
        occurred_at=T0 + dt.timedelta(minutes=minutes),
        idempotency_key=uuid.uuid4().hex,
    )


@pytest.fixture
def amina():
    return audience.contact_create(phone=PHONE, name="Amina")


@pytest.fixture
def other():
    return audience.contact_create(phone=OTHER, name="Baraka")


def url(contact) -> str:
    return f"/api/v1/contacts/{contact.pk}/events/"


def test_the_history_lists_the_contacts_events_latest_received_first(staff_api, amina, other):
    shipped = event(amina, minutes=10)
    opened = event(amina, "app_opened", minutes=5)
    late_posted = event(amina, "cart_abandoned", minutes=-60, order_id="A-17")  # received last, happened first
    event(other, minutes=20)
    response = staff_api.get(url(amina))
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["id"] for row in rows] == [late_posted.pk, opened.pk, shipped.pk]
    assert rows[0] == {
        "id": late_posted.pk,
        "name": "cart_abandoned",
        "properties": {"order_id": "A-17"},
        "occurred_at": "2026-11-01T08:00:00Z",
        "received_at": rows[0]["received_at"],
        "matched_campaigns": [],
    }


def test_pages_follow_the_cursor_without_gaps_or_repeats_even_for_events_at_one_instant(staff_api, amina):
    made = [event(amina) for n in range(23)]
    Event.objects.filter(pk__in=[e.pk for e in made[:12]]).update(received_at=T0)  # ties on received_at
    made = list(Event.objects.filter(contact=amina))
    seen, page = [], staff_api.get(url(amina), {"page_size": 5}).json()
    while True:
        seen += [row["id"] for row in page["results"]]
        if not page["next"]:
            break
        page = staff_api.get(page["next"]).json()
    expected = [e.pk for e in sorted(made, key=lambda e: (e.received_at, e.pk), reverse=True)]
    assert seen == expected


def test_the_history_filters_by_name_and_time(staff_api, amina):
    event(amina, "app_opened", minutes=1)
    wanted = event(amina, minutes=30)
    event(amina, minutes=90)
    response = staff_api.get(
        url(amina),
        {"name": "order_shipped", "occurred_after": "2026-11-01T09:00:00Z", "occurred_before": "2026-11-01T10:00:00Z"},
    )
    assert [row["id"] for row in response.json()["results"]] == [wanted.pk]


def test_analysts_read_the_history_with_phones_and_emails_masked(analyst_api, staff_api, amina):
    event(amina, "otp_requested", phone="+254712345678", email="amina@example.org", order_id="A-17")
    shown = analyst_api.get(url(amina)).json()["results"][0]["properties"]
    assert "+254712345678" not in str(shown) and "amina@example.org" not in str(shown)
    assert shown["order_id"] == "A-17"
    assert staff_api.get(url(amina)).json()["results"][0]["properties"]["phone"] == "+254712345678"


def test_the_history_is_read_only_and_closed_to_strangers(analyst_api, staff_api, anon_api, amina):
    assert analyst_api.post(url(amina), {}, format="json").status_code == 403
    assert staff_api.post(url(amina), {}, format="json").status_code == 405
    assert anon_api.get(url(amina)).status_code == 401


@pytest.mark.parametrize("contact_id", ["999999", "99999999999999999999"])
def test_an_unknown_contact_is_a_404_naming_it(staff_api, contact_id):
    response = staff_api.get(f"/api/v1/contacts/{contact_id}/events/")
    assert response.status_code == 404 and contact_id in response.json()["detail"]


def test_a_bad_filter_is_a_400_naming_the_parameter(staff_api, amina):
    response = staff_api.get(url(amina), {"occurred_after": "yesterday"})
    assert response.status_code == 400 and "occurred_after" in response.json()


# --- Admin ---------------------------------------------------------------------------------------


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    return client


def test_the_contact_page_shows_its_latest_events_and_links_to_all(superuser_client, amina, other):
    for n in range(LATEST_ON_CONTACT + 5):
        event(amina, f"step_{n:02d}", minutes=n)
    event(other, "someone_else")
    page = superuser_client.get(f"/admin/audience/contact/{amina.pk}/change/").content.decode()
    assert f"step_{LATEST_ON_CONTACT + 4:02d}" in page and "step_04" not in page and "step_05" in page
    assert "someone_else" not in page
    assert f"/admin/campaigns/event/?contact__id__exact={amina.pk}" in page
    listing = superuser_client.get("/admin/campaigns/event/", {"contact__id__exact": amina.pk})
    assert listing.status_code == 200
    assert {e.contact_id for e in listing.context["cl"].result_list} == {amina.pk}
    assert listing.context["cl"].result_count == LATEST_ON_CONTACT + 5


def test_the_contact_page_saves_without_posting_its_events_back(superuser_client, amina):
    event(amina)
    page = superuser_client.get(f"/admin/audience/contact/{amina.pk}/change/")
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "attributes"}
    data.update({"name": "Amina W.", "attributes": "{}", "channel": amina.channel, "locale": amina.locale})
    for formset in page.context["inline_admin_formsets"]:
        if formset.formset.prefix == "events":
            continue  # shown only: the form saves without it
        management = formset.formset.management_form
        data.update({management.add_prefix(k): v for k, v in management.initial.items()})
        for form in formset.formset.initial_forms:
            data[form.add_prefix("id")] = form.instance.pk
            if formset.formset.fk.name:
                data[form.add_prefix(formset.formset.fk.name)] = amina.pk
    response = superuser_client.post(f"/admin/audience/contact/{amina.pk}/change/", data)
    assert response.status_code == 302, response.context and response.context["errors"]
    amina.refresh_from_db()
    assert amina.name == "Amina W." and Event.objects.filter(contact=amina).count() == 1


def test_analysts_see_masked_properties_on_the_contact_page(client, amina):
    from config.roles import ANALYSTS

    client.force_login(UserFactory(username="reader", role=ANALYSTS))
    event(amina, "otp_requested", phone="+254712345678")
    page = client.get(f"/admin/audience/contact/{amina.pk}/change/")
    assert page.status_code == 200
    assert "otp_requested" in page.content.decode() and "+254712345678" not in page.content.decode()


def test_the_events_list_filters_by_name_from_an_index_skip_scan_and_searches_by_phone(superuser_client, amina, other):
    event(amina, "order_shipped")
    event(amina, "app_opened")
    event(other, "cart_abandoned")
    assert event_names() == ["app_opened", "cart_abandoned", "order_shipped"]
    listing = superuser_client.get("/admin/campaigns/event/", {"name": "app_opened"}).content.decode()
    assert "?name=cart_abandoned" in listing and listing.count("app_opened") >= 2
    found = superuser_client.get("/admin/campaigns/event/", {"q": "+254 713 000 002"})
    assert [e.name for e in found.context["cl"].result_list] == ["cart_abandoned"]
    assert superuser_client.get("/admin/campaigns/event/", {"q": "cart_abandoned"}).context["cl"].result_count == 1


def test_the_events_list_counts_at_most_the_cap(superuser_client, amina, monkeypatch):
    import campaigns.admin.event_lists as admin_events

    monkeypatch.setattr(admin_events, "COUNT_CAP", 3)
    for n in range(5):
        event(amina, minutes=n)
    listing = superuser_client.get("/admin/campaigns/event/")
    assert listing.status_code == 200 and listing.context["cl"].result_count == 3
