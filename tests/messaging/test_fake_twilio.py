"""The fake Twilio server, through the real twilio client and plain HTTP."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.fake_twilio import FakeTwilio

SID = "AC" + "1f" * 16
TOKEN = "test-auth-token"
CALLBACK = "https://platform.example.com/webhooks/twilio/status/"


@pytest.fixture
def fake():
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="manual") as server:
        yield server


@pytest.fixture
def client(fake):
    twilio = Client(SID, TOKEN)
    twilio.api.base_url = fake.base_url
    return twilio


def test_create_answers_like_twilio(client, fake):
    message = client.messages.create(to="+254711000001", from_="+15005550006", body="Hello", status_callback=CALLBACK)
    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert (message.to, message.from_, message.body, message.num_segments) == (
        "+254711000001",
        "+15005550006",
        "Hello",
        "1",
    )
    assert message.error_code is None and message.price is None
    assert client.messages(message.sid).fetch().sid == message.sid
    assert fake.requests_to("+254711000001") == 1


def test_whatsapp_content_templates_carry_content_sid_and_variables(client, fake):
    sent = client.messages.create(
        to="whatsapp:+254711000002",
        from_="whatsapp:+15005550006",
        content_sid="HX" + "0" * 32,
        content_variables=json.dumps({"1": "Amina"}),
    )
    form = fake.request_form(sent.sid)
    assert form["ContentSid"] == "HX" + "0" * 32 and json.loads(form["ContentVariables"]) == {"1": "Amina"}
    assert "Body" not in form
    assert fake.requests_to("+254711000002") == 1  # counted with or without the whatsapp: prefix


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "12345", "from_": "+15005550006", "body": "x"}, 21211),
        ({"to": "+254711000003", "body": "x"}, 21603),
        ({"to": "+254711000003", "from_": "+15005550006"}, 21602),
        ({"to": "whatsapp:+254711000003", "from_": "+15005550006", "body": "x"}, 21910),
        ({"to": "+254711000003", "from_": "+15005550006", "content_sid": "HX1"}, 21655),
    ],
)
def test_bad_input_gets_a_twilio_style_400(client, kwargs, code):
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(**kwargs)
    assert (caught.value.status, caught.value.code) == (400, code)


def test_wrong_credentials_get_401(fake):
    intruder = Client(SID, "wrong-token")
    intruder.api.base_url = fake.base_url
    with pytest.raises(TwilioRestException) as caught:
        intruder.messages.create(to="+254711000004", from_="+15005550006", body="x")
    assert caught.value.status == 401
    assert fake.stats()["created"] == 0


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [("429", 429, 20429), ("500", 500, 20500), ("21610", 400, 21610), ("63016", 400, 63016)],
)
def test_errors_are_injected_by_recipient_then_clear(client, fake, error, status, code):
    fake.fail("+254711000005", error)
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to="+254711000005", from_="+15005550006", body="x")
    assert (caught.value.status, caught.value.code) == (status, code)
    assert client.messages.create(to="+254711000005", from_="+15005550006", body="x").status == "queued"
    assert fake.stats()["by_recipient"]["+254711000005"] == 2
    assert fake.stats()["created"] == 1


def test_errors_are_injected_by_rate():
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, error_rate=1.0, error_kind="429", callbacks="off") as fake:
        twilio = Client(SID, TOKEN)
        twilio.api.base_url = fake.base_url
        with pytest.raises(TwilioRestException) as caught:
            twilio.messages.create(to="+254711000006", from_="+15005550006", body="x")
        assert caught.value.status == 429
        assert fake.stats()["errors"] == {"429": 1}


def test_a_timeout_creates_the_message_then_answers_too_late():
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, timeout_sleep=1.0, callbacks="off") as fake:
        fake.fail("+254711000007", "timeout")
        url = f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages.json"
        with pytest.raises(requests.ReadTimeout):
            requests.post(
                url, data={"To": "+254711000007", "From": "+15005550006", "Body": "x"}, auth=(SID, TOKEN), timeout=0.3
            )
        assert fake.stats()["created"] == 1


def test_list_filters_by_recipient_newest_first(client, fake):
    first = client.messages.create(to="+254711000008", from_="+15005550006", body="one")
    second = client.messages.create(to="+254711000008", from_="+15005550006", body="two")
    client.messages.create(to="+254711000009", from_="+15005550006", body="other")
    listed = client.messages.list(to="+254711000008")
    assert [m.sid for m in listed] == [second.sid, first.sid]
    assert len(client.messages.list(to="+254711000008", page_size=1)) == 2  # follows next_page_uri


def test_callbacks_are_correctly_signed(client, fake):
    sent = client.messages.create(to="+254711000010", from_="+15005550006", body="x", status_callback=CALLBACK)
    seen = []
    statuses = fake.deliver_callbacks(lambda url, params, signature: seen.append((url, params, signature)) or 204)
    assert statuses == [204, 204]
    validator = RequestValidator(TOKEN)
    assert [params["MessageStatus"] for _, params, _ in seen] == ["sent", "delivered"]
    for url, params, signature in seen:
        assert url == CALLBACK and params["MessageSid"] == sent.sid
        assert validator.validate(url, params, signature)
        assert not RequestValidator("other-token").validate(url, params, signature)


def test_callbacks_can_come_out_of_order_and_twice():
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="manual", out_of_order=True, duplicates=True) as fake:
        twilio = Client(SID, TOKEN)
        twilio.api.base_url = fake.base_url
        fake.outcome("+254711000011", [("sent", ""), ("undelivered", "30003")])
        twilio.messages.create(to="+254711000011", from_="+15005550006", body="x", status_callback=CALLBACK)
        seen = []
        fake.deliver_callbacks(lambda url, params, signature: seen.append(params) or 200)
        assert [(p["MessageStatus"], p.get("ErrorCode")) for p in seen] == [
            ("undelivered", "30003"),
            ("undelivered", "30003"),
            ("sent", None),
            ("sent", None),
        ]


class _Receiver(BaseHTTPRequestHandler):
    received: list

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        params = {key: values[-1] for key, values in parse_qs(body).items()}
        self.received.append((params, self.headers["X-Twilio-Signature"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        return


def test_a_background_thread_posts_callbacks_over_http():
    received = []
    handler = type("Handler", (_Receiver,), {"received": received})
    receiver = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/webhooks/twilio/status/"
    try:
        with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
            twilio = Client(SID, TOKEN)
            twilio.api.base_url = fake.base_url
            twilio.messages.create(to="+254711000012", from_="+15005550006", body="x", status_callback=url)
            assert fake.wait_idle(5)
            assert fake.stats()["callbacks_sent"] == 2
    finally:
        receiver.shutdown()
        receiver.server_close()
    validator = RequestValidator(TOKEN)
    assert len(received) == 2
    assert all(validator.validate(url, params, signature) for params, signature in received)


def test_stats_and_controls_over_http(fake):
    requests.post(f"{fake.base_url}/_fake/fail", data={"to": "+254711000013", "error": "500", "times": "2"}, timeout=5)
    twilio = Client(SID, TOKEN)
    twilio.api.base_url = fake.base_url
    for _ in range(3):
        try:
            twilio.messages.create(to="+254711000013", from_="+15005550006", body="x")
        except TwilioRestException:
            pass
    stats = requests.get(f"{fake.base_url}/_fake/stats", timeout=5).json()
    assert stats["by_recipient"] == {"+254711000013": 3}
    assert stats["errors"] == {"500": 2} and stats["created"] == 1


def test_keep_alive_connections_are_not_slowed_by_delayed_acks(client, fake):
    """Without TCP_NODELAY each request on a kept-alive connection waits ~40 ms: 100 would take 4 s."""
    client.messages.create(to="+254711000014", from_="+15005550006", body="warm-up")
    started = time.perf_counter()
    for _ in range(100):
        client.messages.create(to="+254711000014", from_="+15005550006", body="x")
    assert time.perf_counter() - started < 2.0


def test_an_error_mix_injects_each_kind_at_its_share_and_records_arrivals(client):
    with FakeTwilio(
        account_sid=SID, auth_token=TOKEN, callbacks="off", error_mix={"500": 0.2, "429": 0.1}, seed=3
    ) as mixed:
        client.api.base_url = mixed.base_url
        before = time.time()
        for n in range(300):
            try:
                client.messages.create(to=f"+2547110{n:05d}", from_="+15005550006", body="Hi")
            except TwilioRestException:
                pass
        errors = mixed.stats()["errors"]
        assert 40 <= errors["500"] <= 80 and 15 <= errors["429"] <= 45
        arrivals = mixed.arrival_times()
        assert len(arrivals) == 300 and before <= min(arrivals) <= max(arrivals) <= time.time()
    with pytest.raises(ValueError):
        FakeTwilio(account_sid=SID, auth_token=TOKEN, error_mix={"418": 0.1})


def test_a_request_whose_body_never_arrived_is_not_counted(client, fake):
    """A sender killed between the headers and the body (a SIGKILLed worker): Twilio never sees
    a request, so neither does the fake: no message, no count, no empty recipient."""
    import base64
    import socket

    host, port = fake.base_url.removeprefix("http://").split(":")
    auth = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    body = "To=%2B254700000001&From=%2B15005550006&Body=Hi"
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            (
                f"POST /2010-04-01/Accounts/{SID}/Messages.json HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Basic {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body[:10]}"
            ).encode()
        )
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # closed without an answer
    client.messages.create(to="+254700000002", from_="+15005550006", body="Hi")  # a whole one counts
    stats = fake.stats()
    assert stats["requests"] == 1 and stats["by_recipient"] == {"+254700000002": 1}
    assert len(fake.messages()) == 1
