"""GET /api/v1/reporting/messages/status: counts, the message list with history, filters, masking."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission

from config.auth import token_cache_clear
from messaging.models import Direction
from messaging.services.status import status_callback_record
from tests.factories import ContactFactory, SenderFactory
from tests.reporting.support import T0, add_recipient, make_campaign, make_message, make_run

pytestmark = pytest.mark.django_db

URL = "/api/v1/reporting/messages/status"


@pytest.fixture
def data():
    campaign = make_campaign()
    run1, run2 = make_run(campaign), make_run(campaign, at=T0 + timedelta(days=1))
    other = make_campaign("Other")
    other_run = make_run(other)
    contact = ContactFactory(phone="+254712345678")
    r1 = add_recipient(run1, contact=contact, message_status="delivered", sent=T0)
    r2 = add_recipient(run1, message_status="failed", error_code="30007")
    r3 = add_recipient(run2, message_status="queued", sent=T0 + timedelta(days=1))
    r4 = add_recipient(other_run, message_status="delivered", sent=T0)
    whatsapp_sender = SenderFactory(channel="whatsapp", kind="whatsapp", from_address="whatsapp:+14155550100")
    solo = make_message(sender=whatsapp_sender, channel="whatsapp", status="read", created_at=T0 + timedelta(days=3))
    inbound = make_message(contact=contact, direction=Direction.INBOUND, status="received", created_at=T0)
    return {
        "campaign": campaign,
        "run1": run1,
        "run2": run2,
        "contact": contact,
        "messages": [r.message for r in (r1, r2, r3, r4)],
        "solo": solo,
        "inbound": inbound,
        "whatsapp_sender": whatsapp_sender,
    }


def _ids(response):
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_counts_by_status_and_history(staff_api, data, django_capture_on_commit_callbacks):
    queued = data["messages"][2]
    with django_capture_on_commit_callbacks(execute=True):
        for status in ("delivered", "sent"):
            status_callback_record(provider_sid=queued.provider_sid, status=status, payload={})
    body = staff_api.get(URL).json()
    assert body["total"] == 6
    assert body["counts"]["delivered"] == 3  # two campaign messages and the one just delivered
    assert body["counts"]["read"] == 1 and body["counts"]["failed"] == 1 and body["counts"]["received"] == 1
    assert body["counts"]["pending"] == 0
    row = next(r for r in body["results"] if r["id"] == queued.pk)
    assert [event["status"] for event in row["history"]] == ["delivered", "sent"]
    assert row["status"] == "delivered"


def test_each_filter(analyst_api, data):
    m = data["messages"]
    assert _ids(analyst_api.get(URL, {"campaign": data["campaign"].pk})) == {m[0].pk, m[1].pk, m[2].pk}
    assert _ids(analyst_api.get(URL, {"run": data["run2"].pk})) == {m[2].pk}
    assert _ids(analyst_api.get(URL, {"sender": data["whatsapp_sender"].pk})) == {data["solo"].pk}
    assert _ids(analyst_api.get(URL, {"channel": "whatsapp"})) == {data["solo"].pk}
    assert _ids(analyst_api.get(URL, {"status": "failed"})) == {m[1].pk}
    assert _ids(analyst_api.get(URL, {"contact": data["contact"].pk})) == {m[0].pk, data["inbound"].pk}
    assert _ids(analyst_api.get(URL, {"direction": "inbound"})) == {data["inbound"].pk}
    window = {
        "created_after": (T0 + timedelta(hours=12)).isoformat(),
        "created_before": (T0 + timedelta(days=2)).isoformat(),
    }
    assert _ids(analyst_api.get(URL, window)) == {m[2].pk}
    filtered = analyst_api.get(URL, {"campaign": data["campaign"].pk, "status": "delivered"}).json()
    assert filtered["total"] == 1 and filtered["counts"]["delivered"] == 1


@pytest.mark.parametrize(
    "params, name",
    [
        ({"status": "bogus"}, "status"),
        ({"channel": "fax"}, "channel"),
        ({"campaign": "abc"}, "campaign"),
        ({"campaign": "999999"}, "campaign"),
        ({"run": "999999"}, "run"),
        ({"sender": "0"}, "sender"),
        ({"contact": "999999"}, "contact"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "2026-11-21T00:00:00Z", "created_before": "2026-11-20T00:00:00Z"}, "created_before"),
    ],
)
def test_bad_filter_values_name_the_parameter(analyst_api, params, name):
    response = analyst_api.get(URL, params)
    assert response.status_code == 400
    assert name in response.json()


def test_cursor_pagination_walks_every_message_once(analyst_api, data):
    seen, url = [], f"{URL}?page_size=2"
    while url:
        body = analyst_api.get(url).json()
        assert len(body["results"]) <= 2
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    assert len(seen) == len(set(seen)) == 6


def test_permissions(anon_api, analyst_api, staff_api, data):
    assert anon_api.get(URL).status_code == 401
    assert analyst_api.get(URL).status_code == 200
    assert analyst_api.post(URL, {}).status_code == 403
    assert staff_api.delete(URL).status_code == 405


def test_phones_are_masked_for_analysts_without_the_permission(analyst_api, analyst_user, staff_api, data):
    params = {"contact": data["contact"].pk}
    rows = {r["direction"]: r for r in analyst_api.get(URL, params).json()["results"]}
    assert rows["outbound"]["to_address"] == "+2547******78"
    assert rows["inbound"]["from_address"] == "+2547******78"
    staff_rows = {r["direction"]: r for r in staff_api.get(URL, params).json()["results"]}
    assert staff_rows["outbound"]["to_address"] == "+254712345678"

    analyst_user.user_permissions.add(Permission.objects.get(codename="see_full_phone"))
    token_cache_clear()  # a remembered token keeps its permissions for API_TOKEN_CACHE_SECONDS
    rows = {r["direction"]: r for r in analyst_api.get(URL, params).json()["results"]}
    assert rows["outbound"]["to_address"] == "+254712345678"


def test_staff_hold_the_full_phone_permission_and_analysts_do_not(staff_user, analyst_user):
    assert staff_user.has_perm("audience.see_full_phone")
    assert not analyst_user.has_perm("audience.see_full_phone")
