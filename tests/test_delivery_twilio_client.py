"""The Twilio provider's HTTP client reads the proxy environment once per host, and still honours it."""

import pytest

from messaging.fake_twilio import FakeTwilio
from messaging.providers import ErrorKind, ProviderError, SendRequest
from messaging.providers.twilio import TwilioProvider

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
    assert provider.client.http_client.session.trust_env is False
    results = [provider.send(_request(f"+25471100{n:04d}")) for n in range(3)]
    assert all(result.provider_sid.startswith("SM") for result in results)
    assert fake.stats()["requests"] == 3
    assert list(provider.client.http_client._proxies.values()) == [{}]  # read once for the one host


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
