"""The Twilio provider's HTTP client: proxies read once per host, network errors told apart, the form as sent."""

import socket
import threading

import pytest
from urllib3.exceptions import SSLError

from messaging.providers import ErrorKind, ProviderError, SendRequest
from messaging.providers.twilio.client import TwilioProvider
from tests.fake_twilio import FakeTwilio

SID = "AC" + "2e" * 16
TOKEN = "client-test-token"


@pytest.fixture
def fake():
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="off") as server:
        yield server


def _provider(fake) -> TwilioProvider:
    return TwilioProvider(SID, TOKEN, fake.base_url, (1.0, 5.0))


def _request(to: str) -> SendRequest:
    return SendRequest(to=to, channel="sms", from_="+15005550006", body="Hello")


def test_sends_without_reading_the_environment_per_request(fake, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    provider = _provider(fake)
    results = [provider.send(_request(f"+25471100{n:04d}")) for n in range(3)]
    assert all(result.provider_sid.startswith("SM") for result in results)
    assert fake.stats()["requests"] == 3
    managers = list(provider.client.http_client._managers.values())
    assert len(managers) == 1 and type(managers[0]).__name__ == "PoolManager"  # read once for the one host, no proxy


def test_a_proxy_in_the_environment_is_used(fake, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: the proxy refuses
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(ProviderError) as raised:
        _provider(fake).send(_request("+254711009001"))
    assert raised.value.kind == ErrorKind.RETRYABLE
    assert fake.requests_to("+254711009001") == 0


def test_no_proxy_is_honoured(fake, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert _provider(fake).send(_request("+254711009002")).provider_sid.startswith("SM")
    assert fake.requests_to("+254711009002") == 1


def test_a_refused_connection_is_retryable_and_known_unsent():
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="off") as closed:
        url = closed.base_url  # the port is free again once the server stops
    with pytest.raises(ProviderError) as raised:
        TwilioProvider(SID, TOKEN, url, (1.0, 5.0)).send(_request("+254711009003"))
    assert raised.value.kind == ErrorKind.RETRYABLE
    assert raised.value.accepted_unknown is False
    assert "could not connect" in raised.value.message


def test_no_answer_in_time_leaves_the_outcome_unknown():
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="off", timeout_sleep=2.0) as slow:
        slow.fail("+254711009004", "timeout")
        with pytest.raises(ProviderError) as raised:
            TwilioProvider(SID, TOKEN, slow.base_url, (1.0, 0.3)).send(_request("+254711009004"))
        assert raised.value.accepted_unknown is True  # the server created it: never resend blindly
        assert "no answer" in raised.value.message
        assert slow.requests_to("+254711009004") == 1


def test_a_broken_tls_connection_leaves_the_outcome_unknown():
    # urllib3 raises the same SSLError for a failed handshake and for a connection broken mid-request
    # (when Twilio may have created the message): reconciliation must look before anything is resent.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up():
        connection, _ = listener.accept()
        connection.recv(4096)  # the client's TLS hello
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # not TLS: the client's TLS layer fails
        connection.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        with pytest.raises(ProviderError) as raised:
            TwilioProvider(SID, TOKEN, f"https://127.0.0.1:{port}", (1.0, 1.0)).send(_request("+254711009008"))
    finally:
        thread.join(5)
        listener.close()
    assert raised.value.kind == ErrorKind.RETRYABLE
    assert raised.value.accepted_unknown is True
    assert isinstance(raised.value.__cause__, SSLError)


def test_error_answers_keep_their_status_and_code(fake):
    fake.fail("+254711009005", "429")
    fake.fail("+254711009006", "500")
    provider = _provider(fake)
    for to, code in (("+254711009005", "20429"), ("+254711009006", "20500")):
        with pytest.raises(ProviderError) as raised:
            provider.send(_request(to))
        assert raised.value.kind == ErrorKind.RETRYABLE and raised.value.code == code
        assert raised.value.accepted_unknown is False


def test_the_form_and_credentials_arrive_as_twilio_expects(fake):
    result = _provider(fake).send(
        SendRequest(to="+254711009007", channel="sms", from_="+15005550006", body="Hi & bye = ok?")
    )
    form = fake.request_form(result.provider_sid)
    assert form["Body"] == "Hi & bye = ok?" and form["To"] == "+254711009007" and form["From"] == "+15005550006"
    with pytest.raises(ProviderError) as raised:  # a wrong token is refused by the server's auth check
        TwilioProvider(SID, "wrong-token", fake.base_url, (1.0, 5.0)).send(_request("+254711009008"))
    assert raised.value.kind == ErrorKind.PERMANENT
