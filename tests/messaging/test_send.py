"""The send service through the real twilio client against the fake server, and the simulated provider."""

import random
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from audience.models import ConsentEvent, ConsentSource, ConsentStatus
from config import observe
from config.celery import app as celery_app
from messaging.models import Direction, Message, MessageStatus, MessageTemplate, ProviderCallback, Sender
from messaging.providers.simulated import Odds, reference_sid, simulated_step_run, status_plan
from messaging.services import create, reconcile, send, send_outcomes
from messaging.services.status import status_callback_record
from tests.factories import ContactFactory
from tests.fake_twilio import FakeTwilio

pytestmark = pytest.mark.django_db

SID = "AC" + "2e" * 16
TOKEN = "send-test-token"
PUBLIC = "https://platform.example.com"
HX = "HX" + "b7" * 16


@pytest.fixture
def fake(settings):
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="manual", timeout_sleep=2.0) as server:
        settings.MESSAGING_PROVIDER = "twilio"
        settings.TWILIO_ACCOUNT_SID = SID
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.TWILIO_API_BASE_URL = server.base_url
        settings.TWILIO_READ_TIMEOUT = 0.5
        settings.PUBLIC_BASE_URL = PUBLIC
        yield server


@pytest.fixture
def sms_sender(db):
    return Sender.objects.create(name="sms", channel="sms", kind="long_code", from_address="+15005550006")


@pytest.fixture
def wa_sender(db):
    return Sender.objects.create(name="wa", channel="whatsapp", kind="whatsapp", from_address="whatsapp:+15005550007")


def new_message(contact, sender, body="Hello there", **kwargs) -> Message:
    message, created = create.message_create(contact=contact, sender=sender, body=body, enqueue=False, **kwargs)
    assert created
    return message


def make_due(message: Message) -> None:
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def make_stale(message: Message) -> None:
    past = timezone.now() - send_outcomes.STALE_SENDING_AFTER - timedelta(seconds=5)
    Message.objects.filter(pk=message.pk).update(claimed_at=past, sending_at=past)


# --- Twilio through the fake server --------------------------------------------------------


def test_a_message_goes_through_the_real_twilio_client(fake, sms_sender):
    contact = ContactFactory(phone="+254711100001")
    message = send.message_send(new_message(contact, sms_sender, "Hi Amina").pk)
    assert message.status == MessageStatus.QUEUED
    assert message.queued_at is not None and message.attempts == 1
    form = fake.request_form(message.provider_sid)
    assert form["To"] == "+254711100001" and form["From"] == "+15005550006" and form["Body"] == "Hi Amina"
    assert form["StatusCallback"] == PUBLIC + "/webhooks/twilio/status/"
    assert (message.segments, message.encoding) == (1, "GSM-7")


def test_a_second_send_of_the_same_message_does_nothing(fake, sms_sender):
    message = new_message(ContactFactory(phone="+254711100002"), sms_sender)
    first = send.message_send(message.pk)
    second = send.message_send(message.pk)
    assert second.provider_sid == first.provider_sid
    assert fake.requests_to("+254711100002") == 1


def test_a_whatsapp_template_is_sent_as_content_sid_and_variables_never_body(fake, wa_sender):
    template = MessageTemplate.objects.create(
        name="order", channel="whatsapp", body="Hi {{ name }}", content_sid=HX, content_variables={"1": "name"}
    )
    contact = ContactFactory(phone="+254711100003", name="Amina", channel="whatsapp")  # no inbound: outside window
    message, _ = create.message_create(contact=contact, template=template, enqueue=False)
    message = send.message_send(message.pk)
    assert message.status == MessageStatus.QUEUED
    form = fake.request_form(message.provider_sid)
    assert form["ContentSid"] == HX and form["ContentVariables"] == '{"1":"Amina"}'
    assert "Body" not in form
    assert form["To"] == "whatsapp:+254711100003" and form["From"] == "whatsapp:+15005550007"


@pytest.mark.parametrize(("hours_ago", "sent"), [(None, False), (25, False), (23, True)])
def test_free_form_whatsapp_only_within_24_hours_of_the_last_inbound(fake, wa_sender, hours_ago, sent):
    last = timezone.now() - timedelta(hours=hours_ago) if hours_ago else None
    contact = ContactFactory(phone="+254711100004", channel="whatsapp", last_inbound_at=last)
    message = send.message_send(new_message(contact, wa_sender, "free text").pk)
    if sent:
        assert message.status == MessageStatus.QUEUED
        assert fake.requests_to("+254711100004") == 1
    else:
        assert (message.status, message.skip_reason) == (MessageStatus.SKIPPED, "outside WhatsApp 24h window")
        assert message.skipped_at is not None
        assert fake.requests_to("+254711100004") == 0


def test_an_opted_out_contact_is_skipped(fake, sms_sender):
    contact = ContactFactory(phone="+254711100005", consent_status=ConsentStatus.OPTED_OUT)
    message = send.message_send(new_message(contact, sms_sender).pk)
    assert (message.status, message.skip_reason) == (MessageStatus.SKIPPED, "contact opted out")
    assert fake.stats()["requests"] == 0


def test_a_variable_missing_at_send_time_skips_the_message(fake, sms_sender):
    template = MessageTemplate.objects.create(name="city", channel="sms", body="Hi {{ name }} in {{ attributes.city }}")
    contact = ContactFactory(phone="+254711100006", name="Amina", attributes={"city": "Nairobi"})
    message, _ = create.message_create(contact=contact, template=template, enqueue=False)
    contact.attributes = {}  # gone between the request (checked then) and the send
    contact.save(update_fields=["attributes"])
    message = send.message_send(message.pk)
    assert (message.status, message.skip_reason) == (MessageStatus.SKIPPED, "missing variable attributes.city")
    assert fake.stats()["requests"] == 0


def test_a_template_is_rendered_at_send_time_with_event_values(fake, sms_sender):
    template = MessageTemplate.objects.create(name="paid", channel="sms", body="{{ name }}, paid {{ event.amount }} €")
    contact = ContactFactory(phone="+254711100007", name="Joy")
    message, _ = create.message_create(contact=contact, template=template, context={"amount": "12"}, enqueue=False)
    message = send.message_send(message.pk)
    assert message.body == "Joy, paid 12 €"
    assert fake.request_form(message.provider_sid)["Body"] == "Joy, paid 12 €"


@pytest.mark.parametrize("error", ["429", "500"])
def test_retryable_errors_wait_with_backoff_then_send(fake, sms_sender, error):
    contact = ContactFactory(phone="+254711100008")
    fake.fail(contact.phone, error)
    message = send.message_send(new_message(contact, sms_sender).pk)
    assert message.status == MessageStatus.PENDING and message.attempts == 1
    assert message.error_code in ("20429", "20500")
    wait = (message.next_attempt_at - timezone.now()).total_seconds()
    assert 0 < wait <= send_outcomes.BACKOFF_BASE
    assert send.message_send(message.pk).status == MessageStatus.PENDING  # not due yet: nothing sent
    assert fake.requests_to(contact.phone) == 1
    make_due(message)
    message = send.message_send(message.pk)
    assert message.status == MessageStatus.QUEUED and message.attempts == 2 and message.error_code == ""
    assert fake.requests_to(contact.phone) == 2


def test_a_throttled_answer_is_counted_for_the_alert_even_when_the_retry_goes_through(fake, sms_sender):
    start = time.time()
    before = observe.senders_throttled_since(start, start).get(str(sms_sender.pk), 0)
    contact = ContactFactory(phone="+254711100010")
    fake.fail(contact.phone, "429")
    message = send.message_send(new_message(contact, sms_sender).pk)
    make_due(message)
    assert send.message_send(message.pk).error_code == ""  # the row forgets the 429 ...
    counted = observe.senders_throttled_since(start, time.time())  # ... the per-minute count keeps it
    assert counted.get(str(sms_sender.pk), 0) - before == 1


def test_retries_stop_at_the_cap_with_a_reason(fake, sms_sender):
    contact = ContactFactory(phone="+254711100009")
    fake.fail(contact.phone, "500", times=send_outcomes.MAX_ATTEMPTS)
    message = new_message(contact, sms_sender)
    for _ in range(send_outcomes.MAX_ATTEMPTS):
        message = send.message_send(message.pk)
        make_due(message)
    assert message.status == MessageStatus.FAILED
    assert message.error_message.startswith(f"gave up after {send_outcomes.MAX_ATTEMPTS} attempts")
    assert fake.requests_to(contact.phone) == send_outcomes.MAX_ATTEMPTS


def test_retry_delays_grow_exponentially_with_jitter_and_a_cap():
    rng = random.Random(1)
    delays = [send_outcomes.retry_delay(attempt, rng) for attempt in range(1, 12)]
    assert 1 <= delays[0] <= 2 and 8 <= delays[3] <= 16
    assert all(send_outcomes.BACKOFF_CAP / 2 <= delay <= send_outcomes.BACKOFF_CAP for delay in delays[-3:])


def test_error_21610_fails_the_message_and_opts_the_contact_out(fake, sms_sender):
    contact = ContactFactory(phone="+254711100010")
    fake.fail(contact.phone, "21610")
    message = send.message_send(new_message(contact, sms_sender).pk)
    assert (message.status, message.error_code) == (MessageStatus.FAILED, "21610")
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_OUT
    event = ConsentEvent.objects.get(contact=contact, to_status=ConsentStatus.OPTED_OUT)
    assert event.source == ConsentSource.PROVIDER
    assert event.evidence["error_code"] == "21610" and event.evidence["message_id"] == message.pk


def test_error_63016_fails_the_message_with_the_reason(fake, wa_sender):
    contact = ContactFactory(phone="+254711100011", channel="whatsapp", last_inbound_at=timezone.now())
    fake.fail("whatsapp:" + contact.phone, "63016")
    message = send.message_send(new_message(contact, wa_sender).pk)
    assert (message.status, message.error_code) == (MessageStatus.FAILED, "63016")
    assert "outside the allowed window" in message.error_message
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.OPTED_IN


def test_a_refused_connection_is_retried(fake, settings, sms_sender):
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:1"
    message = send.message_send(new_message(ContactFactory(phone="+254711100012"), sms_sender).pk)
    assert message.status == MessageStatus.PENDING and message.next_attempt_at is not None


# --- exactly once: unknown outcomes and crashes --------------------------------------------


def test_a_timeout_is_reconciled_with_the_provider_never_resent(fake, sms_sender):
    contact = ContactFactory(phone="+254711100013")
    fake.fail(contact.phone, "timeout")
    message = send.message_send(new_message(contact, sms_sender).pk)
    assert message.status == MessageStatus.SENDING and message.provider_sid is None
    assert message.error_message.startswith("outcome unknown")
    [created] = fake.messages()
    assert reconcile.message_reconcile(message.pk).status == MessageStatus.SENDING  # not stale yet: left alone
    make_stale(message)
    message = reconcile.message_reconcile(message.pk)
    assert message.status == MessageStatus.QUEUED and message.provider_sid == created["sid"]
    assert fake.requests_to(contact.phone) == 1


def test_a_crash_after_the_provider_accepted_is_reconciled_by_the_reaper(fake, sms_sender):
    from messaging.providers import get_provider

    contact = ContactFactory(phone="+254711100014")
    message = new_message(contact, sms_sender, "Your code is 4411")
    # The worker claimed, rendered and sent, then died before saving the sid.
    assert send._claim(message.pk, timezone.now())
    message = Message.objects.select_related("contact", "sender", "template").get(pk=message.pk)
    assert send._render(message) == ""
    accepted = get_provider("twilio").send(send.send_request_for(message))
    make_stale(message)
    assert reconcile.messages_reconcile_stale() == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED and message.provider_sid == accepted.provider_sid
    assert fake.requests_to(contact.phone) == 1


def test_a_stale_send_the_provider_never_saw_is_sent_again(fake, sms_sender):
    contact = ContactFactory(phone="+254711100015")
    message = new_message(contact, sms_sender)
    assert send._claim(message.pk, timezone.now())  # claimed, then the worker died before calling Twilio
    make_stale(message)
    message = reconcile.message_reconcile(message.pk)
    assert message.status == MessageStatus.PENDING
    message = send.message_send(message.pk)
    assert message.status == MessageStatus.QUEUED
    assert fake.requests_to(contact.phone) == 1


def test_due_retries_are_picked_up_when_their_task_was_lost(fake, sms_sender, django_capture_on_commit_callbacks):
    message = new_message(ContactFactory(phone="+254711100016"), sms_sender)
    Message.objects.filter(pk=message.pk).update(attempts=1, next_attempt_at=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks() as callbacks:
        assert send.messages_send_due() == 1
    assert len(callbacks) == 1


# --- the simulated provider ----------------------------------------------------------------


@pytest.fixture
def simulated(settings):
    settings.MESSAGING_PROVIDER = "simulated"


def test_callbacks_that_arrive_before_the_sid_is_saved_are_applied(simulated, sms_sender):
    message = new_message(ContactFactory(phone="+254711100017"), sms_sender)
    sid = reference_sid(f"message-{message.pk}")
    status_callback_record(provider_sid=sid, status="delivered", payload={"MessageSid": sid})
    message = send.message_send(message.pk)
    assert message.provider_sid == sid
    assert message.status == MessageStatus.DELIVERED
    assert ProviderCallback.objects.get(provider_sid=sid).applied_at is not None


def _play(step: dict) -> None:
    while step is not None:
        step = simulated_step_run(step)


def test_the_simulated_provider_plays_statuses_and_a_reply_through_the_webhook_services(simulated, wa_sender):
    contact = ContactFactory(phone="+254711100018", channel="whatsapp", last_inbound_at=timezone.now())
    message = send.message_send(new_message(contact, wa_sender).pk)
    assert message.status == MessageStatus.QUEUED and message.provider_sid.startswith("SM")
    step = {
        "sid": message.provider_sid,
        "channel": "whatsapp",
        "to": contact.phone,
        "from_": wa_sender.from_address,
        "steps": [["sent", ""], ["delivered", ""], ["read", ""]],
        "reply": "Thanks!",
    }
    _play(step)
    message.refresh_from_db()
    assert message.status == MessageStatus.READ and message.read_at and message.delivered_at and message.sent_at
    assert list(message.callbacks.values_list("status", flat=True)) == ["sent", "delivered", "read"]
    reply = Message.objects.get(direction=Direction.INBOUND)
    assert (reply.contact_id, reply.body, reply.sender_id) == (contact.pk, "Thanks!", wa_sender.pk)
    # The reply step run again (a redelivered task) records no second reply.
    simulated_step_run({**step, "steps": []})
    assert Message.objects.filter(direction=Direction.INBOUND).count() == 1


def test_the_simulated_provider_fails_with_real_twilio_codes(simulated, sms_sender):
    message = send.message_send(new_message(ContactFactory(phone="+254711100019"), sms_sender).pk)
    step = {"sid": message.provider_sid, "channel": "sms", "to": "+254711100019", "from_": "+15005550006"}
    _play({**step, "steps": [["sent", ""], ["undelivered", "30003"]], "reply": ""})
    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.UNDELIVERED, "30003")


def test_simulated_plans_are_realistic():
    rng = random.Random(7)
    plans = [status_plan("whatsapp", rng) for _ in range(5000)]
    finals = [plan[-1][0] for plan in plans]
    assert 0.01 < finals.count("failed") / 5000 < 0.03
    assert 0.02 < finals.count("undelivered") / 5000 < 0.045
    assert finals.count("read") > finals.count("delivered") > 0
    codes = {plan[-1][1] for plan in plans if plan[-1][0] in ("failed", "undelivered")}
    assert codes == {"30003", "30005", "30006", "30007", "30008"}
    assert all(plan[-1][0] != "read" for plan in (status_plan("sms", rng, Odds(read=1.0)) for _ in range(200)))


@pytest.fixture
def eager_celery():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_a_simulated_send_runs_to_a_final_status_through_celery_tasks(
    simulated, eager_celery, sms_sender, django_capture_on_commit_callbacks
):
    message = new_message(ContactFactory(phone="+254711100020"), sms_sender)
    with django_capture_on_commit_callbacks(execute=True):
        send.message_enqueue(message.pk, message.sender_id)
    message.refresh_from_db()
    assert message.status in (MessageStatus.DELIVERED, MessageStatus.UNDELIVERED, MessageStatus.FAILED)
    assert message.callbacks.count() >= 1
    assert not message.callbacks.filter(applied_at__isnull=True).exists()


def test_the_simulated_statuses_of_sends_close_together_share_one_task(
    simulated, sms_sender, django_capture_on_commit_callbacks
):
    from messaging.providers import simulated as provider

    contacts = [ContactFactory(phone=f"+25471110010{n}") for n in range(3)]
    provider._group.clear()
    with (
        mock.patch.object(provider.threading, "Timer") as timer,
        mock.patch("messaging.tasks.simulated_status_steps.apply_async") as queued,
    ):
        with django_capture_on_commit_callbacks(execute=True):
            messages = [send.message_send(new_message(contact, sms_sender).pk) for contact in contacts]
        provider.steps_flush()  # the group's window closing
    assert timer.call_count == 1 and timer.call_args.args == (provider.GROUP_WINDOW, provider.steps_flush)
    assert queued.call_count == 1
    (steps,) = queued.call_args.kwargs["args"]
    assert [step["sid"] for step in steps] == [message.provider_sid for message in messages]
    assert 0 <= queued.call_args.kwargs["countdown"] <= 3


def test_grouped_statuses_are_played_together_and_one_failing_holds_none_back(simulated, sms_sender):
    from messaging import tasks

    good = send.message_send(new_message(ContactFactory(phone="+254711100110"), sms_sender).pk)
    plan = [["sent", ""], ["delivered", ""]]
    steps = [
        {"sid": "SMbroken", "channel": "sms", "to": "", "from_": "", "steps": plan, "reply": ""},
        {
            "sid": good.provider_sid,
            "channel": "sms",
            "to": good.to_address,
            "from_": good.from_address,
            "steps": plan,
            "reply": "",
        },
    ]

    def played(step):
        if step["sid"] == "SMbroken":
            raise RuntimeError("a broken step")
        return simulated_step_run(step)

    with (
        mock.patch.object(tasks, "simulated_step_run", played),
        mock.patch.object(tasks.simulated_status_steps, "apply_async") as again,
    ):
        tasks.simulated_status_steps.run(steps)
    good.refresh_from_db()
    assert good.status == MessageStatus.SENT
    (rest,) = again.call_args.kwargs["args"]
    assert [(step["sid"], step["steps"]) for step in rest] == [(good.provider_sid, [["delivered", ""]])]
