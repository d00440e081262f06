"""No log line holds a phone number or an e-mail address, whatever logged it and at whatever level.

Everything here goes through the console handler as LOGGING configures it (the root logger, at
DEBUG, every logger opened to DEBUG): API requests with the phone in the query string, signed
status and inbound webhooks and a forged one, a send and a failing send through the real twilio
client at the fake server, an import, Celery tasks run and published with the phone in their
arguments, an exception quoting it, Django's development-server line, and gunicorn's access and
error logs.
"""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from celery import signals
from gunicorn.config import Config

from audience.models import Contact
from config.celery import app as celery_app
from config.gunicorn_conf import RedactingLogger
from config.logging import JsonFormatter
from messaging.models import MessageStatus, Sender
from messaging.services import create, send
from tests import twilio_webhooks as tw
from tests.fake_twilio import FakeTwilio
from tests.ingest import ingest, write

PHONE = "+254722918364"
EMAIL = "wanjiru.kamau@example.org"
SPELLINGS = [PHONE, PHONE[1:], quote(PHONE), "0722918364", "0722 918 364", "722918364", EMAIL, quote(EMAIL)]
SID = "AC" + "4b" * 16
TOKEN = "logs-test-token"


@pytest.fixture
def output():
    """What the configured console handler writes, in production's JSON format (extras too), all loggers at DEBUG."""
    root = logging.getLogger()
    (console,) = [handler for handler in root.handlers if handler.get_name() == "console"]
    stream = io.StringIO()
    previous_stream, previous_formatter = console.setStream(stream), console.formatter
    console.setFormatter(JsonFormatter())
    loggers = [root, *(logging.getLogger(name) for name in list(root.manager.loggerDict))]
    levels = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    yield stream
    console.setStream(previous_stream)
    console.setFormatter(previous_formatter)
    for logger, level in levels:
        logger.setLevel(level)


def assert_clean(text: str) -> None:
    found = [spelling for spelling in SPELLINGS if spelling.lower() in text.lower()]
    lines = [line for line in text.splitlines() if any(s.lower() in line.lower() for s in found)]
    assert found == [], lines[:5]


@celery_app.task(name="tests.logs.notify")
def notify(to: str, note: str) -> str:
    return f"notified {to}"


@celery_app.task(name="tests.logs.notify_fails")
def notify_fails(to: str) -> None:
    raise ValueError(f"{to} could not be reached (contact {EMAIL})")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("roles")
def test_no_log_line_holds_a_phone_or_an_email(output, staff_api, client, settings, tmp_path):
    # An import with the phone, one row of it misspelled.
    job = ingest(write(tmp_path, "c.csv", f"phone,email\n{PHONE},{EMAIL}\n0722 918 364,{EMAIL}\n"))
    assert job.status == "succeeded" and job.invalid_count == 1

    # The API, with the phone in the query string: found, and refused (a 400 Django logs with the request).
    assert staff_api.get("/api/v1/contacts/", {"phone": PHONE}).status_code == 200
    assert staff_api.get("/api/v1/contacts/", {"phone": "0722 918 364", "email": EMAIL}).status_code == 400
    assert staff_api.get(f"/api/v1/nowhere/{PHONE}/").status_code == 404

    # A send and a failing send through the real client at the fake server.
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="off") as server:
        settings.MESSAGING_PROVIDER, settings.TWILIO_ACCOUNT_SID = "twilio", SID
        settings.TWILIO_AUTH_TOKEN, settings.TWILIO_API_BASE_URL = TOKEN, server.base_url
        sender = Sender.objects.create(name="sms", channel="sms", kind="long_code", from_address="+15005550006")
        contact = Contact.objects.get(phone=PHONE)
        sent, _ = create.message_create(contact=contact, sender=sender, body=f"Hi, write to {EMAIL}", enqueue=False)
        sent = send.message_send(sent.pk)
        server.fail(PHONE, "21211")
        failed, _ = create.message_create(contact=contact, sender=sender, body="again", enqueue=False)
        failed = send.message_send(failed.pk)
    assert sent.status == MessageStatus.QUEUED and failed.status == MessageStatus.FAILED

    # Webhooks: a status callback, an inbound reply, and a forged one.
    settings.TWILIO_AUTH_TOKEN, settings.PUBLIC_BASE_URL = tw.TOKEN, tw.PUBLIC
    status = tw.status_payload(sent.provider_sid, "delivered") | {"To": PHONE}
    assert tw.post_form(client, tw.STATUS_PATH, status).status_code == 200
    reply = tw.inbound_payload("SM" + "4c" * 16, f"my mail is {EMAIL}", phone=PHONE, whatsapp=True)
    assert tw.post_form(client, tw.INBOUND_PATH, reply).status_code == 200
    assert tw.post_form(client, tw.INBOUND_PATH, reply, token="forged").status_code == 403

    # Celery: tasks run with the phone in their arguments (their trace logs them), one failing, and a
    # published task's argsrepr, which workers log when it is received.
    assert notify.apply(args=[PHONE], kwargs={"note": EMAIL}).get() == f"notified {PHONE}"
    assert notify_fails.apply(args=[f"whatsapp:{PHONE}"]).failed()
    headers = _published_headers(notify, [PHONE], {"note": EMAIL})
    logging.getLogger("celery.worker.strategy").info(
        "Task %(name)s[%(id)s] received", {"name": "n", "id": "1", "args": headers["argsrepr"]}
    )
    assert PHONE not in headers["argsrepr"] and EMAIL not in headers["kwargsrepr"]

    # Our own code, extras and an exception quoting the phone; Django's development server line.
    try:
        raise RuntimeError(f'duplicate key value violates unique constraint: Key (phone)=({PHONE}) "{EMAIL}"')
    except RuntimeError:
        logging.getLogger("messaging").exception("send failed for %s", PHONE, extra={"to": PHONE, "data": [EMAIL]})
    logging.getLogger("django.server").info('"%s" %s %s', f"GET /?phone={quote(PHONE)} HTTP/1.1", "200", "12")

    gunicorn_lines = _gunicorn_logs()
    text = output.getvalue()
    assert "Bad Request: /api/v1/contacts/" in text and "webhook" in text and "tests.logs.notify" in text
    assert "WSGIRequest: GET '/api/v1/contacts/?phone=" in text  # django.request's extra: the request line
    assert "Traceback" in text and "could not be reached" in text and "/api/v1/contacts/" in gunicorn_lines
    assert "?" not in gunicorn_lines.split('"')[1]  # the request line has no query string
    assert_clean(text)
    assert_clean(gunicorn_lines)


def _published_headers(task, args, kwargs) -> dict:
    """The headers Celery builds for a task message, after the before_task_publish receivers ran."""
    message = celery_app.amqp.create_task_message("id-1", task.name, args, kwargs)
    signals.before_task_publish.send(
        sender=task.name,
        body=message.body,
        exchange="",
        routing_key="celery",
        headers=message.headers,
        properties=message.properties,
        declare=[],
        retry_policy=None,
    )
    return message.headers


def _gunicorn_logs() -> str:
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("errorlog", "-")
    logger = RedactingLogger(cfg)
    stream = io.StringIO()
    for handler in logger.access_log.handlers + logger.error_log.handlers:
        handler.setStream(stream)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/api/v1/contacts/?phone={quote(PHONE)}&email={quote(EMAIL)}",
        "PATH_INFO": "/api/v1/contacts/",
        "QUERY_STRING": f"phone={quote(PHONE)}&email={quote(EMAIL)}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.9",
        "HTTP_REFERER": f"https://platform.example.com/admin/audience/contact/?q={quote(PHONE)}",
        "HTTP_USER_AGENT": "curl/8",
    }
    response = SimpleNamespace(status="200 OK", sent=12, headers=[("Content-Type", "application/json")])
    request = SimpleNamespace(headers=[("X-Caller", PHONE)])
    logger.access(response, request, environ, timedelta(milliseconds=3))
    logger.error("Error handling request %s", environ["RAW_URI"])
    return stream.getvalue()
