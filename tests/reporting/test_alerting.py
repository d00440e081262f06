"""Alert rules: each driven over its threshold and back records and sends one alert and one recovery."""

from __future__ import annotations

import datetime as dt
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import TestCase
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.models import CampaignRun
from config import observe
from config.celery import app as celery_app
from messaging.models import Message, MessageStatus
from reporting.alerting import services
from reporting.alerting.models import AlertNotice, AlertRule, AlertState
from tests.factories import CampaignFactory, ContactFactory, SenderFactory
from tests.twilio_webhooks import STATUS_PATH, status_payload

TEST_QUEUE = "alerts-test"


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        self.server.posts.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    """A local HTTP server standing in for Slack: it records every JSON body POSTed to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def notify(settings, hook, db):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{hook.server_port}/hook"
    settings.METRICS_FLUSH_SECONDS = 0
    celery_app.conf.task_always_eager = True
    client = observe.redis_client()
    for key in client.scan_iter(observe.SIGNATURE_FAILURES_KEY + "*"):
        client.delete(key)
    client.delete(TEST_QUEUE)
    yield hook
    celery_app.conf.task_always_eager = False
    client.delete(TEST_QUEUE)


def only(name: str, **changes) -> AlertRule:
    """The default rule ``name`` (from the data migration), the only one enabled, with ``changes``."""
    AlertRule.objects.exclude(name=name).update(enabled=False)
    rule = AlertRule.objects.get(name=name)
    for field, value in changes.items():
        setattr(rule, field, value)
    rule.save()
    return rule


def evaluate(capture, at: dt.datetime) -> list[int]:
    with capture(execute=True):
        return services.alerts_evaluate(at)


def assert_one_alert_and_one_recovery(rule: AlertRule, hook, subject: str = "") -> None:
    notices = list(AlertNotice.objects.filter(rule=rule).order_by("pk"))
    assert [(e.kind, e.subject) for e in notices] == [("fired", subject), ("cleared", subject)]
    assert all(e.emailed_at and e.posted_at for e in notices)
    assert [m.subject.split(" ", 2)[1] for m in mail.outbox] == ["[ALERT]", "[RESOLVED]"]
    assert all(m.to == ["ops@example.com"] for m in mail.outbox)
    assert [p["event_id"] for p in hook.posts] == [e.pk for e in notices]
    assert hook.posts[0]["text"].startswith("[ALERT] " + rule.name)
    assert hook.posts[1]["text"].startswith("[RESOLVED] " + rule.name)
    assert not AlertState.objects.get(rule=rule, subject=subject).firing


def drive(capture, rule, breach, recover, *, hold_after: dt.timedelta = dt.timedelta(0)) -> None:
    """Breach, evaluate twice (one alert), recover, evaluate until the hold has passed (one recovery)."""
    breach()
    # Evaluated from after the breach: per-minute counters (signature failures, throttled answers)
    # are keyed by the wall-clock minute they happen in, and a breach may land in the next minute.
    now = timezone.now()
    assert len(evaluate(capture, now)) == 1
    assert evaluate(capture, now + dt.timedelta(seconds=30)) == []  # still firing: nothing new
    recover()
    start = now + dt.timedelta(minutes=1) + hold_after
    assert evaluate(capture, start) == []  # clear, but the hold has not passed
    assert evaluate(capture, start + dt.timedelta(minutes=rule.clear_after_minutes - 1)) == []
    assert len(evaluate(capture, start + dt.timedelta(minutes=rule.clear_after_minutes))) == 1
    assert evaluate(capture, start + dt.timedelta(minutes=rule.clear_after_minutes + 1)) == []


def outbound(sender, count: int, **fields) -> None:
    contact = ContactFactory()
    Message.objects.bulk_create(
        Message(contact=contact, sender=sender, channel="sms", to_address=contact.phone, **fields) for _ in range(count)
    )


# --- Each rule over its threshold and back ---------------------------------------------------


def test_the_data_migration_creates_a_rule_of_each_kind_and_the_beat_schedule(db):
    assert AlertRule.objects.filter(enabled=True).values("kind").distinct().count() == 8
    task = PeriodicTask.objects.get(name="reporting: evaluate alerts")
    assert task.task == "reporting.alerts_evaluate" and task.interval.every == 30
    celery_app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    assert {"reporting.alerts_evaluate", "reporting.alert_notify"} <= set(celery_app.tasks)


def test_send_failure_rate(notify, django_capture_on_commit_callbacks):
    rule = only("Send failure rate")
    sender, now = SenderFactory(), timezone.now()

    def breach():
        outbound(sender, 15, status=MessageStatus.SENT, queued_at=now, sent_at=now)
        outbound(sender, 10, status=MessageStatus.FAILED, failed_at=now, error_code="30008")

    # Later evaluations fall outside the 15-minute window, where too few messages are left to judge.
    drive(django_capture_on_commit_callbacks, rule, breach, lambda: None, hold_after=dt.timedelta(minutes=15))
    assert_one_alert_and_one_recovery(rule, notify)
    assert AlertNotice.objects.filter(kind="fired").get().value == pytest.approx(0.4)


def test_send_failure_rate_needs_enough_messages(notify, django_capture_on_commit_callbacks):
    only("Send failure rate")
    outbound(SenderFactory(), 5, status=MessageStatus.FAILED, failed_at=timezone.now())
    assert evaluate(django_capture_on_commit_callbacks, timezone.now()) == []


def _publish(count: int) -> None:
    celery_app.conf.task_always_eager = False  # (eager mode does not apply to send_task anyway)
    for _ in range(count):
        celery_app.send_task("tests.never_run", queue=TEST_QUEUE)
    celery_app.conf.task_always_eager = True


def test_queue_depth(notify, django_capture_on_commit_callbacks):
    rule = only("Queue depth", threshold=2, clear_threshold=1, params={"queues": [TEST_QUEUE]})
    empty = lambda: observe.redis_client().delete(TEST_QUEUE)  # noqa: E731
    drive(django_capture_on_commit_callbacks, rule, lambda: _publish(3), empty)
    assert_one_alert_and_one_recovery(rule, notify, subject=TEST_QUEUE)
    assert AlertNotice.objects.filter(kind="fired").get().value == 3


def test_queue_depth_hysteresis_keeps_firing_until_the_clear_threshold(notify, django_capture_on_commit_callbacks):
    only("Queue depth", threshold=2, clear_threshold=0, params={"queues": [TEST_QUEUE]})
    now = timezone.now()
    _publish(3)
    evaluate(django_capture_on_commit_callbacks, now)
    observe.redis_client().rpop(TEST_QUEUE)  # 2 left: not above the threshold, but above the clear threshold
    for minutes in range(1, 20, 5):
        evaluate(django_capture_on_commit_callbacks, now + dt.timedelta(minutes=minutes))
    assert list(AlertNotice.objects.values_list("kind", flat=True)) == ["fired"]
    assert AlertState.objects.get(subject=TEST_QUEUE).firing


def test_queue_oldest_task(notify, django_capture_on_commit_callbacks):
    rule = only("Queue oldest task", params={"queues": [TEST_QUEUE]})
    _publish(1)
    now = timezone.now()
    # The task was published now; eleven minutes later it is older than the ten-minute threshold.
    assert len(evaluate(django_capture_on_commit_callbacks, now + dt.timedelta(minutes=5))) == 0
    assert len(evaluate(django_capture_on_commit_callbacks, now + dt.timedelta(minutes=11))) == 1
    observe.redis_client().delete(TEST_QUEUE)
    assert evaluate(django_capture_on_commit_callbacks, now + dt.timedelta(minutes=12)) == []
    assert len(evaluate(django_capture_on_commit_callbacks, now + dt.timedelta(minutes=17))) == 1
    assert_one_alert_and_one_recovery(rule, notify, subject=TEST_QUEUE)
    assert AlertNotice.objects.filter(kind="fired").get().value == pytest.approx(11, abs=0.5)


def test_no_workers(notify, django_capture_on_commit_callbacks, monkeypatch):
    rule = only("No Celery worker")
    replies = []
    # The network edge: a broadcast ping and the workers' replies.
    monkeypatch.setattr(celery_app.control, "ping", lambda timeout: list(replies))
    drive(django_capture_on_commit_callbacks, rule, lambda: None, lambda: replies.append({"celery@w1": {"ok": "pong"}}))
    assert_one_alert_and_one_recovery(rule, notify)


def test_beat_stale(notify, django_capture_on_commit_callbacks):
    rule = only("celery-beat stopped")
    now = timezone.now()
    drive(
        django_capture_on_commit_callbacks,
        rule,
        lambda: PeriodicTask.objects.update(last_run_at=now - dt.timedelta(minutes=30)),
        lambda: PeriodicTask.objects.update(last_run_at=now + dt.timedelta(minutes=1)),
    )
    assert_one_alert_and_one_recovery(rule, notify)


def test_webhook_signature_failures(notify, django_capture_on_commit_callbacks, client, settings):
    rule = only("Webhook signature failures", threshold=3)
    settings.TWILIO_AUTH_TOKEN = "alerting-test-token"

    def breach():
        for _ in range(4):
            response = client.post(
                STATUS_PATH,
                data=urlencode(status_payload("SM" + "0" * 32, "delivered")),
                content_type="application/x-www-form-urlencoded",
                headers={"X-Twilio-Signature": "forged"},
            )
            assert response.status_code == 403

    # Refusals age out of the 5-minute window; then the 10-minute hold.
    drive(django_capture_on_commit_callbacks, rule, breach, lambda: None, hold_after=dt.timedelta(minutes=6))
    assert_one_alert_and_one_recovery(rule, notify)
    assert AlertNotice.objects.filter(kind="fired").get().value == 4


def test_run_stuck(notify, django_capture_on_commit_callbacks):
    rule = only("Campaign run stuck")
    sender = SenderFactory()
    campaign = CampaignFactory(name="Stuck", sender=sender)
    now = timezone.now()
    run = CampaignRun.objects.create(campaign=campaign, scheduled_for=now, mps=10, total=10, pending=10)

    drive(
        django_capture_on_commit_callbacks,
        rule,
        lambda: CampaignRun.objects.filter(pk=run.pk).update(dispatched_at=now - dt.timedelta(minutes=40)),
        lambda: CampaignRun.objects.filter(pk=run.pk).update(status="completed", pending=0, sent=10),
    )
    assert_one_alert_and_one_recovery(rule, notify, subject=str(run.pk))
    assert "campaign 'Stuck'" in mail.outbox[0].subject


def test_sender_throttled(notify, django_capture_on_commit_callbacks):
    rule = only("Sender throttled", threshold=2)
    sender = SenderFactory(name="whatsapp-main")
    client = observe.redis_client()
    for key in client.scan_iter(observe.SENDER_THROTTLED_KEY + "*"):  # throttled sends other tests counted
        client.delete(key)

    def breach():
        outbound(sender, 2, status=MessageStatus.PENDING, error_code="20429")
        outbound(sender, 1, status=MessageStatus.FAILED, error_code="63018", failed_at=timezone.now())
        outbound(SenderFactory(), 2, status=MessageStatus.PENDING, error_code="20429")  # another, under threshold

    drive(django_capture_on_commit_callbacks, rule, breach, lambda: None, hold_after=dt.timedelta(minutes=10))
    assert_one_alert_and_one_recovery(rule, notify, subject=str(sender.pk))
    assert "whatsapp-main" in notify.posts[0]["text"]


def test_sender_throttled_counts_429s_whose_retry_went_through(notify, django_capture_on_commit_callbacks):
    rule = only("Sender throttled", threshold=2)
    sender = SenderFactory(name="sms-busy")
    client = observe.redis_client()
    for key in client.scan_iter(observe.SENDER_THROTTLED_KEY + "*"):
        client.delete(key)

    def breach():  # three 429s at send time; no message row keeps the code
        for _ in range(3):
            observe.provider_error_count(sender.pk, throttled=True)
        observe.provider_error_count(sender.pk, throttled=False)  # another refusal: not counted

    def recover():
        for key in client.scan_iter(observe.SENDER_THROTTLED_KEY + "*"):
            client.delete(key)

    drive(django_capture_on_commit_callbacks, rule, breach, recover)
    assert_one_alert_and_one_recovery(rule, notify, subject=str(sender.pk))
    assert AlertNotice.objects.filter(kind="fired").get().value == 3


# --- State machine and delivery --------------------------------------------------------------


def test_a_breach_during_the_hold_keeps_the_alert_firing(notify, django_capture_on_commit_callbacks):
    only("celery-beat stopped")
    now = timezone.now()
    PeriodicTask.objects.update(last_run_at=now - dt.timedelta(minutes=30))
    evaluate(django_capture_on_commit_callbacks, now)
    # Clear at minute 1, breached again at 2 (the 2-minute hold restarts), clear from minute 3.
    for minute, last_tick in [(1, 0), (2, -30), (3, 2), (4, 3)]:
        PeriodicTask.objects.update(last_run_at=now + dt.timedelta(minutes=last_tick))
        evaluate(django_capture_on_commit_callbacks, now + dt.timedelta(minutes=minute))
    assert list(AlertNotice.objects.values_list("kind", flat=True)) == ["fired"]
    evaluate(django_capture_on_commit_callbacks, now + dt.timedelta(minutes=5))
    assert list(AlertNotice.objects.order_by("pk").values_list("kind", flat=True)) == ["fired", "cleared"]


def test_two_evaluators_with_the_same_view_record_one_alert(notify, django_capture_on_commit_callbacks):
    rule = only("No Celery worker")
    now = timezone.now()
    state = AlertState.objects.create(rule=rule, subject="")
    stale = AlertState.objects.get(pk=state.pk)  # both evaluators read "not firing"
    with django_capture_on_commit_callbacks(execute=True):
        first = services._transition(rule, state, 0, now, AlertNotice.Kind.FIRED)
        second = services._transition(rule, stale, 0, now, AlertNotice.Kind.FIRED)
    assert first is not None and second is None
    assert AlertNotice.objects.count() == 1 and len(mail.outbox) == 1 and len(notify.posts) == 1


def test_delivering_a_notice_twice_sends_it_once(notify, django_capture_on_commit_callbacks):
    only("No Celery worker")
    state = AlertState.objects.create(rule=AlertRule.objects.get(name="No Celery worker"))
    with django_capture_on_commit_callbacks(execute=True):
        notice = services._transition(state.rule, state, 0, timezone.now(), AlertNotice.Kind.FIRED)
    services.alert_notice_notify(notice.pk)
    services.alert_notice_notify(notice.pk)
    assert len(mail.outbox) == 1 and len(notify.posts) == 1


def test_a_failed_webhook_is_retried_without_resending_the_email(notify, settings, django_capture_on_commit_callbacks):
    rule = only("No Celery worker")
    state = AlertState.objects.create(rule=rule)
    settings.ALERT_WEBHOOK_URL = "http://127.0.0.1:9/nothing-listens"
    celery_app.conf.task_always_eager = False
    with django_capture_on_commit_callbacks(execute=False):
        notice = services._transition(rule, state, 0, timezone.now(), AlertNotice.Kind.FIRED)
    with pytest.raises(services.NotifyFailed):
        services.alert_notice_notify(notice.pk)
    notice.refresh_from_db()
    assert notice.emailed_at is not None and notice.posted_at is None
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{notify.server_port}/hook"
    services.alert_notice_notify(notice.pk)
    notice.refresh_from_db()
    assert notice.posted_at is not None
    assert len(mail.outbox) == 1 and len(notify.posts) == 1


def test_a_webhook_answering_garbage_is_retried_later(notify, settings, django_capture_on_commit_callbacks):
    rule = only("No Celery worker")
    state = AlertState.objects.create(rule=rule)
    listener = socket.create_server(("127.0.0.1", 0))

    def garble():
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(b"not HTTP at all\r\n\r\n")  # http.client: BadStatusLine, not an OSError
        connection.close()

    thread = threading.Thread(target=garble, daemon=True)
    thread.start()
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    with django_capture_on_commit_callbacks(execute=False):
        notice = services._transition(rule, state, 0, timezone.now(), AlertNotice.Kind.FIRED)
    try:
        with pytest.raises(services.NotifyFailed):
            services.alert_notice_notify(notice.pk)
    finally:
        thread.join(5)
        listener.close()
    notice.refresh_from_db()
    assert notice.posted_at is None  # released: the task's retry posts it
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{notify.server_port}/hook"
    services.alert_notice_notify(notice.pk)
    assert len(notify.posts) == 1


def test_alerts_api_lists_firing_alerts_and_history(notify, django_capture_on_commit_callbacks, analyst_api):
    only("celery-beat stopped")
    PeriodicTask.objects.update(last_run_at=timezone.now() - dt.timedelta(minutes=30))
    evaluate(django_capture_on_commit_callbacks, timezone.now())
    response = analyst_api.get("/api/v1/monitoring/alerts")
    assert response.status_code == 200
    body = response.json()
    assert [(a["rule"], a["kind"]) for a in body["firing"]] == [("celery-beat stopped", "beat_stale")]
    assert body["firing"][0]["value"] == pytest.approx(30, abs=0.1)
    assert [e["kind"] for e in body["recent"]] == ["fired"]


def test_the_dashboard_api_and_page_show_the_firing_alert_and_its_history(
    notify, django_capture_on_commit_callbacks, analyst_api, client, analyst_user
):
    only("celery-beat stopped")
    PeriodicTask.objects.update(last_run_at=timezone.now() - dt.timedelta(minutes=30))
    evaluate(django_capture_on_commit_callbacks, timezone.now())
    alerts = analyst_api.get("/api/v1/monitoring/dashboard").json()["alerts"]
    assert [a["rule"] for a in alerts["firing"]] == ["celery-beat stopped"]
    assert [e["kind"] for e in alerts["recent"]] == ["fired"]

    client.force_login(analyst_user)
    page = client.get("/reporting/").content.decode()
    firing = page.split('id="alerts"', 1)[1].split("</section>", 1)[0]
    assert "celery-beat stopped" in firing and "No alert is firing" not in firing
    assert "[ALERT] celery-beat stopped" in firing  # the history row

    PeriodicTask.objects.update(last_run_at=timezone.now())
    AlertState.objects.update(firing=False)
    page = client.get("/reporting/").content.decode()
    assert "No alert is firing" in page.split('id="alerts"', 1)[1].split("</section>", 1)[0]


def test_alerts_api_needs_authentication(anon_api):
    assert anon_api.get("/api/v1/monitoring/alerts").status_code == 401


def test_the_watchdog_command_alerts_with_no_worker_and_delivers_itself(notify, monkeypatch):
    """No worker means no task delivers: the command sends its alert in its own process."""
    only("No Celery worker")
    celery_app.conf.task_always_eager = False
    monkeypatch.setattr(celery_app.control, "ping", lambda timeout: [])
    with TestCase.captureOnCommitCallbacks(execute=True):
        call_command("alerts_evaluate", stdout=io.StringIO())
    notice = AlertNotice.objects.get()
    assert notice.kind == "fired" and notice.emailed_at and notice.posted_at
    assert len(mail.outbox) == 1 and len(notify.posts) == 1
