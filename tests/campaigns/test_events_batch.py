"""POST /api/v1/events/batch and /api/v1/events/?wait=false: stored first, a result per event, matched later."""

import uuid
from unittest import mock

import pytest

from audience import services as audience
from audience.models import ConsentEvent, Contact
from audience.phones import phone_hash
from campaigns import services
from campaigns.models import CampaignRun, Event, Recipient
from campaigns.services import events
from campaigns.tasks import events_sweep
from messaging.models import Message
from tests.delivery import assert_counts_match_recount
from tests.factories import MessageTemplateFactory, SenderFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/events/batch"
PHONE = "+254713000001"
OTHER = "+254713000002"
STRANGER = "+254713000099"


@pytest.fixture
def campaign():
    audience.contact_create(phone=PHONE, name="Amina")
    audience.contact_create(phone=OTHER, name="Baraka")
    template = MessageTemplateFactory(body="Order {{ event.order_id }} shipped")
    campaign = services.campaign_create(
        name="Shipped", kind="triggered", template=template, sender=SenderFactory(), trigger_event="order_shipped"
    )
    services.campaign_launch(campaign)
    return campaign


def item(key=None, **overrides):
    return {
        "idempotency_key": key or uuid.uuid4().hex,
        "contact": PHONE,
        "name": "order_shipped",
        "properties": {"order_id": "A-17"},
        **overrides,
    }


def post_batch(client, items):
    return client.post(URL, {"events": items}, format="json")


def test_a_batch_is_stored_with_a_result_per_event_and_bad_events_do_not_sink_good_ones(staff_api, campaign):
    response = post_batch(
        staff_api,
        [
            item("a"),
            item("b", name=""),
            item("c", contact=OTHER, properties={"order_id": "B-2"}),
            item("d", contact="not a phone"),
            item("e", occurred_at="yesterday-ish"),
            item("f", properties=["x"]),
            item("g", contact=999_999),
            {"contact": PHONE, "name": "order_shipped"},
            "text",
        ],
    )
    assert response.status_code == 200, response.json()
    data = response.json()
    results = data["results"]
    assert [result["index"] for result in results] == list(range(9))
    assert [result["status"] for result in results] == [
        "accepted",
        "error",
        "accepted",
        "error",
        "error",
        "error",
        "error",
        "error",
        "error",
    ]
    assert (data["accepted"], data["errors"], data["replayed"], data["unknown_contact"]) == (2, 7, 0, 0)
    assert results[1] == {
        "index": 1,
        "status": "error",
        "code": 400,
        "errors": {"name": ["This field may not be blank."]},
    }
    assert "not a phone number" in results[3]["errors"]["contact"][0]
    assert "Datetime has wrong format" in results[4]["errors"]["occurred_at"][0]
    assert results[5]["errors"] == {"properties": ["must be a JSON object"]}
    assert results[6]["errors"] == {"contact": ["no contact with id 999999"]}
    assert "idempotency_key" in results[7]["errors"]
    assert "non_field_errors" in results[8]["errors"]
    stored = {event.idempotency_key: event for event in Event.objects.all()}
    assert set(stored) == {"a", "c"}
    assert stored["a"].status == "pending" and results[0]["id"] == stored["a"].pk
    assert stored["c"].contact == Contact.objects.get(phone=OTHER)
    assert not Recipient.objects.exists()  # matching is the workers' job


def test_workers_answer_each_stored_event_once(staff_api, campaign):
    post_batch(staff_api, [item(str(n), contact=PHONE if n % 2 else OTHER) for n in range(10)])
    assert events_sweep() == 10
    assert events_sweep() == 0
    assert Recipient.objects.count() == 10 and Message.objects.count() == 10
    assert set(Event.objects.values_list("status", flat=True)) == {"matched"}
    assert all(list(event.matched_campaigns.all()) == [campaign] for event in Event.objects.all())
    message = Recipient.objects.filter(event__idempotency_key="3").get().message
    assert message.render_context == {"order_id": "A-17"} and message.contact.phone == PHONE
    run = CampaignRun.objects.get(campaign=campaign)
    assert (run.total, run.pending) == (10, 10)
    assert_counts_match_recount(run)


def test_replays_are_reported_and_a_reused_key_with_another_event_is_a_422_at_its_index(staff_api, campaign):
    first = post_batch(staff_api, [item("a"), item("b")]).json()["results"]
    events_sweep()
    again = post_batch(
        staff_api,
        [
            item("b"),
            item("a", properties={"order_id": "other"}),
            item("c"),
            item("c"),
            item("c", contact=OTHER),
        ],
    ).json()["results"]
    assert again[0] == {"index": 0, "status": "replayed", "id": first[1]["id"], "event_status": "matched"}
    assert again[1]["status"] == "error" and again[1]["code"] == 422
    assert "different request" in again[1]["errors"]["idempotency_key"][0]
    assert again[2]["status"] == "accepted"
    assert again[3] == {"index": 3, "status": "replayed", "id": again[2]["id"], "event_status": "pending"}
    assert again[4]["code"] == 422
    events_sweep()
    assert Event.objects.count() == 3 and Recipient.objects.count() == 3


def test_an_unknown_phone_is_kept_and_reported_or_its_contact_created_without_consent(staff_api, campaign):
    results = post_batch(
        staff_api, [item("a", contact=STRANGER), item("b", contact="+254713000098", create_contact=True)]
    ).json()["results"]
    assert results[0]["status"] == "unknown_contact" and results[0]["event_status"] == "unknown_contact"
    kept = Event.objects.get(idempotency_key="a")
    assert kept.contact is None and kept.contact_phone_hash == phone_hash(STRANGER)
    assert STRANGER not in str(Event.objects.filter(pk=kept.pk).values().get())
    assert results[1]["status"] == "accepted"
    created = Contact.objects.get(phone="+254713000098")
    assert created.consent_status == "opted_out"  # an event is no consent
    assert ConsentEvent.objects.filter(contact=created, to_status="opted_out", source="api").exists()
    events_sweep()
    assert not Recipient.objects.filter(event=kept).exists()
    answered = Recipient.objects.get(event__idempotency_key="b")
    assert (answered.state, answered.reason, answered.message) == ("skipped", "opted_out", None)
    assert staff_api.get("/api/v1/events/?status=unknown_contact").json()["results"][0]["id"] == kept.pk


@pytest.mark.parametrize(
    "body",
    [{"events": []}, {"events": "x"}, {"other": []}, [item()], {"events": [item() for _ in range(1001)]}],
)
def test_a_malformed_batch_is_a_400_naming_events(staff_api, campaign, body):
    response = staff_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert "events" in response.json()
    assert not Event.objects.exists()


def test_analysts_may_not_post_a_batch(analyst_api, campaign):
    assert post_batch(analyst_api, [item()]).status_code == 403


def test_a_batch_takes_a_few_statements_whatever_its_size(staff_api, campaign, django_assert_max_num_queries):
    post_batch(staff_api, [item()])  # the token and roles, looked up once
    items = [item(contact=PHONE if n % 3 else OTHER) for n in range(300)] + [item(contact=STRANGER)]
    with django_assert_max_num_queries(12):
        response = post_batch(staff_api, items)
    assert response.json()["accepted"] == 300


def test_matching_a_batch_takes_a_few_statements_per_campaign(staff_api, campaign, django_assert_max_num_queries):
    post_batch(staff_api, [item(contact=PHONE if n % 3 else OTHER) for n in range(300)])
    # one of them decides every answer of the batch (campaigns.services.eligibility); the count
    # includes the statements sent through config.sql (server-side parameters)
    with django_assert_max_num_queries(18):
        assert len(events.events_match()) == 300
    assert Recipient.objects.filter(state="pending").count() == 300


# --- The single door without waiting -----------------------------------------------------------


def post_single(client, data, key="k1", wait="false"):
    return client.post(f"/api/v1/events/?wait={wait}", data, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_wait_false_answers_202_once_stored_and_the_event_is_matched_after(staff_api, campaign):
    body = {"contact": PHONE, "name": "order_shipped", "properties": {"order_id": "A-17"}}
    response = post_single(staff_api, body)
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "accepted" and response.json()["event_status"] == "pending"
    event_id = response.json()["id"]
    assert staff_api.get(f"/api/v1/events/{event_id}/").json()["matched_campaigns"] == []
    events_sweep()
    read = staff_api.get(f"/api/v1/events/{event_id}/").json()
    assert read["matched_campaigns"] == [campaign.pk] and read["status"] == "matched"
    replay = post_single(staff_api, body)
    assert (replay.status_code, replay.json()["status"], replay.json()["id"]) == (202, "replayed", event_id)
    conflict = post_single(staff_api, {**body, "properties": {}})
    assert conflict.status_code == 422 and "Idempotency-Key" in conflict.json()
    # the waiting door replays it too, with the campaigns it fired
    waited = post_single(staff_api, body, wait="true")
    assert (waited.status_code, waited.json()["matched_campaigns"]) == (201, [campaign.pk])
    assert Recipient.objects.count() == 1


def test_wait_false_keeps_an_unknown_phone_and_wait_true_refuses_it(staff_api, campaign):
    body = {"contact": STRANGER, "name": "order_shipped"}
    refused = post_single(staff_api, body, key="a", wait="true")
    assert refused.status_code == 400 and "create_contact" in refused.json()["contact"][0]
    kept = post_single(staff_api, body, key="b")
    assert (kept.status_code, kept.json()["status"]) == (202, "unknown_contact")
    created = post_single(staff_api, {**body, "create_contact": True}, key="c", wait="true")
    assert created.status_code == 201 and created.json()["matched_campaigns"] == [campaign.pk]
    assert Contact.objects.get(phone=STRANGER).consent_status == "opted_out"
    assert Recipient.objects.get().reason == "opted_out"


def test_wait_false_refuses_bad_fields_naming_them(staff_api, campaign):
    response = post_single(staff_api, {"contact": 999_999, "name": ""})
    assert response.status_code == 400
    assert set(response.json()) == {"name"}  # the contact is looked up once the fields are good
    assert post_single(staff_api, {"contact": 999_999, "name": "x"}).json() == {
        "contact": ["no contact with id 999999"]
    }
    assert post_single(staff_api, {"contact": PHONE, "name": "x"}, wait="maybe").status_code == 400
    assert not Event.objects.exists()


# --- Waking the matchers ----------------------------------------------------------------------


def test_storing_events_wakes_one_matcher_until_it_starts_looking(
    staff_api, campaign, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(events.kick, "KICK_QUIET", 0.0)
    events.events_kick_clear()
    with mock.patch("campaigns.tasks.events_match_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            post_batch(staff_api, [item()])
        with django_capture_on_commit_callbacks(execute=True):
            post_batch(staff_api, [item()])
        assert delay.call_count == 1  # a matcher is queued and has not looked yet
        events.events_kick_clear()  # it starts
        with django_capture_on_commit_callbacks(execute=True):
            post_batch(staff_api, [item()])
        assert delay.call_count == 2
        with django_capture_on_commit_callbacks(execute=True):
            post_batch(staff_api, [item("x", contact=STRANGER)])
        assert delay.call_count == 2  # nothing to match
    events.events_kick_clear()


def test_a_process_that_just_kicked_skips_the_round_trip_and_the_matcher_lingers_for_it(campaign, monkeypatch):
    events.events_kick_clear()
    monkeypatch.setattr(events.kick, "_last_kick", 0.0)
    assert events.MATCHER_LINGER > events.kick.KICK_QUIET
    # A quiet spell long enough that a busy machine's pause between the two kicks stays inside it.
    with (
        mock.patch.object(events.kick, "KICK_QUIET", 30.0),
        mock.patch("campaigns.tasks.events_match_task.delay") as delay,
    ):
        events.events_kick()
        events.events_kick_clear()  # the matcher started
        events.events_kick()  # within KICK_QUIET: no Redis call, no task
        assert delay.call_count == 1
    assert events.events_linger(seconds=0.2) is False
    contact_id = Contact.objects.get(phone=PHONE).pk
    events.events_store([events.EventIn(0, "k", "", "order_shipped", {}, None, contact_id, None, False)])
    assert events.events_linger(seconds=0.2) is True
    events.events_kick_clear()


def test_erasing_a_person_deletes_the_events_kept_for_their_phone_before_they_were_a_contact(staff_api, campaign):
    post_batch(staff_api, [item("early", contact=STRANGER), item("other", contact="+254713000098")])
    contact = audience.contact_create(phone=STRANGER, name="Late")
    post_batch(staff_api, [item("late", contact=STRANGER)])
    audience.contact_erase(contact)
    assert set(Event.objects.values_list("idempotency_key", flat=True)) == {"other"}


def test_waiting_on_a_key_stored_without_waiting_matches_it_then(staff_api, campaign):
    body = {"contact": PHONE, "name": "order_shipped", "properties": {"order_id": "A-17"}}
    assert post_single(staff_api, body).json()["event_status"] == "pending"
    waited = post_single(staff_api, body, wait="true")
    assert waited.status_code == 201
    assert (waited.json()["status"], waited.json()["matched_campaigns"]) == ("matched", [campaign.pk])
    assert events_sweep() == 0 and Recipient.objects.count() == 1
