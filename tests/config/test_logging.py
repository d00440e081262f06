"""Structured logs: JSON lines, the request id, task ids from Celery's signals, and no phone numbers at any level."""

from __future__ import annotations

import json
import logging
import re

import pytest
from celery import signals
from django.test import RequestFactory

from audience.models import ConsentStatus, Contact
from config.celery import app as celery_app
from config.logging import E164, ContextFilter, JsonFormatter, RedactFilter, context_get, log_context, logging_config
from config.middleware import RequestIdMiddleware
from messaging.models import Message, MessageStatus, Sender
from messaging.services import create, send
from tests import twilio_webhooks as tw
from tests.factories import ContactFactory
from tests.fake_twilio import FakeTwilio

PHONE = "+254712345678"
ANY_E164 = re.compile(r"\+\d{8,15}")


class Lines(logging.Handler):
    """The console handler's filters and JSON formatter, writing to a list instead of stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.addFilter(ContextFilter())
        self.addFilter(RedactFilter())
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines():
    handler = Lines()
    logger = logging.getLogger("tests.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)


def test_each_event_is_one_json_line_with_the_context_ids(lines):
    logger = logging.getLogger("tests.logging")
    with log_context(run_id=7, campaign_id=3):
        logger.info("batch done\nsecond line", extra={"claimed": 25})
    logger.warning("outside")
    first, second = (json.loads(line) for line in lines.lines)
    assert all("\n" not in line for line in lines.lines)
    assert first["message"] == "batch done\nsecond line" and first["level"] == "INFO"
    assert (first["run_id"], first["campaign_id"], first["claimed"]) == (7, 3, 25)
    assert first["logger"] == "tests.logging" and first["time"].endswith("+00:00")
    assert "run_id" not in second


def test_an_exception_is_kept_in_the_same_line(lines):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("tests.logging").exception("failed")
    (event,) = (json.loads(line) for line in lines.lines)
    assert "ValueError: boom" in event["exception"]


def test_phone_numbers_are_masked_at_every_level_in_the_message_extras_and_exception(lines):
    logger = logging.getLogger("tests.logging")
    logger.info("sent to %s", PHONE)
    logger.debug("sent to %s", PHONE)
    try:
        raise ValueError(f"no route to {PHONE}")
    except ValueError:
        logger.exception("failed", extra={"to": f"whatsapp:{PHONE}", "step": {"to": PHONE, "tries": 2}})
    info, debug, failed = (json.loads(line) for line in lines.lines)
    assert info["message"] == debug["message"] == "sent to +25********78"
    assert failed["to"] == "whatsapp:+25********78" and failed["step"] == {"to": "+25********78", "tries": 2}
    assert "ValueError: no route to +25********78" in failed["exception"]
    assert PHONE not in "".join(lines.lines)


def test_the_request_id_is_kept_when_sane_and_made_otherwise(lines):
    seen = []

    def view(request):
        logging.getLogger("tests.logging").info("handling")
        seen.append(context_get().get("request_id"))
        from django.http import HttpResponse

        return HttpResponse("ok")

    middleware = RequestIdMiddleware(view)
    factory = RequestFactory()
    kept = middleware(factory.get("/", HTTP_X_REQUEST_ID="lb-4f1c2a9e-77"))
    assert kept["X-Request-ID"] == "lb-4f1c2a9e-77" == seen[0]
    assert json.loads(lines.lines[0])["request_id"] == "lb-4f1c2a9e-77"
    for bad in ["short", "has spaces in it 12345", "x" * 200, 'quote"injection{}1234']:
        response = middleware(factory.get("/", HTTP_X_REQUEST_ID=bad))
        assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])
    assert context_get().get("request_id") is None  # reset after the request


def test_requests_through_django_get_a_request_id_header(client, db):
    response = client.get("/health/", headers={"X-Request-ID": "abcdef12-3456"})
    assert response["X-Request-ID"] == "abcdef12-3456"
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/health/")["X-Request-ID"])


def test_celery_tasks_log_with_their_run_and_message_ids_from_positional_arguments(lines):
    celery_app.loader.import_default_modules()  # autodiscovery, as a worker does at start
    for name, args, expected in [
        ("campaigns.run_dispatch", [42], {"run_id": 42}),
        ("messaging.message_send", [], {"message_id": 9}),
    ]:
        task = celery_app.tasks[name]
        kwargs = {"message_id": 9} if not args else {}
        signals.task_prerun.send(sender=task, task_id=f"id-{name}", task=task, args=args, kwargs=kwargs)
        logging.getLogger("tests.logging").info("inside")
        signals.task_postrun.send(sender=task, task_id=f"id-{name}", task=task, args=args, kwargs=kwargs)
        event = json.loads(lines.lines.pop())
        assert {key: event.get(key) for key in expected} == expected
        assert event["task"] == name
        assert "run_id" not in context_get() and "task" not in context_get()


def test_log_format_text_keeps_one_line_per_event():
    config = logging_config("INFO", "text")
    assert config["handlers"]["console"]["formatter"] == "text"
    assert logging_config("INFO", "json")["handlers"]["console"]["formatter"] == "json"
    assert config["loggers"]["twilio"]["level"] == "WARNING"


SID = "AC" + "5a" * 16
TOKEN = "logging-test-token"


def test_a_send_and_webhooks_log_no_phone_number_at_info(settings, client, caplog, db):
    """The real twilio client against the fake server, a status callback and an inbound STOP."""
    caplog.set_level(logging.INFO)
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="off") as server:
        settings.MESSAGING_PROVIDER = "twilio"
        settings.TWILIO_ACCOUNT_SID = SID
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.TWILIO_API_BASE_URL = server.base_url
        sender = Sender.objects.create(name="sms", channel="sms", kind="long_code", from_address="+15005550006")
        contact = ContactFactory(phone=PHONE)
        message, _ = create.message_create(contact=contact, sender=sender, body="Your code is 4411", enqueue=False)
        message = send.message_send(message.pk)
        assert message.status == MessageStatus.QUEUED and message.provider_sid

    settings.TWILIO_AUTH_TOKEN, settings.PUBLIC_BASE_URL = tw.TOKEN, tw.PUBLIC
    payload = tw.status_payload(message.provider_sid, "undelivered", error_code="30003")
    assert tw.post_form(client, tw.STATUS_PATH, payload).status_code == 200
    stop = tw.inbound_payload("SM" + "7c" * 16, "STOP", phone=PHONE)
    assert tw.post_form(client, tw.INBOUND_PATH, stop).status_code == 200
    forged = tw.post_form(client, tw.INBOUND_PATH, stop, token="wrong-token")
    assert forged.status_code == 403
    assert Contact.objects.get(pk=contact.pk).consent_status == ConsentStatus.OPTED_OUT
    assert Message.objects.get(pk=message.pk).status == MessageStatus.UNDELIVERED

    logged = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any("refused" in r.getMessage() for r in logged)  # the capture works: the forged one is logged
    for record in logged:
        text = record.getMessage() + json.dumps(getattr(record, "__dict__", {}), default=str)
        assert not ANY_E164.search(text), record.getMessage()
        assert "Your code is" not in text and not E164.search(text)
