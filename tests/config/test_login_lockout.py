"""Admin login lockout: per account and client address together, the client found behind trusted proxies."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from config.clients import client_ip
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
PASSWORD = "correct-horse-battery-staple"
PROXY = "10.9.0.2"  # our reverse proxy: every request reaches the app from it


@pytest.fixture
def users():
    for name in ("boss", "colleague"):
        user = UserFactory(username=name, is_staff=True, is_superuser=True)
        user.set_password(PASSWORD)
        user.save()


def _login(client, username, password, *, remote=PROXY, forwarded=None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=remote, **headers)


def _fail_until_locked(client, settings, **where) -> list[int]:
    return [_login(client, "boss", "wrong", **where).status_code for _ in range(settings.AXES_FAILURE_LIMIT)]


def test_the_limit_th_failure_locks_the_account_for_that_address_with_retry_after(client, users, settings):
    assert _fail_until_locked(client, settings, remote="203.0.113.7") == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [
        429
    ]
    locked = _login(client, "boss", PASSWORD, remote="203.0.113.7")
    assert locked.status_code == 429 and "_auth_user_id" not in client.session
    assert int(locked["Retry-After"]) == settings.LOGIN_LOCKOUT_MINUTES * 60
    assert "Too many failed logins" in locked.content.decode()


def test_a_locked_account_still_logs_in_from_another_address_and_others_from_the_same(client, users, settings):
    _fail_until_locked(client, settings, remote="203.0.113.7")
    assert _login(client, "boss", PASSWORD, remote="198.51.100.4").status_code == 302
    client.logout()
    assert _login(client, "colleague", PASSWORD, remote="203.0.113.7").status_code == 302


def test_behind_a_trusted_proxy_one_persons_failures_lock_no_one_else(client, users, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    _fail_until_locked(client, settings, forwarded="203.0.113.7")
    assert _login(client, "boss", PASSWORD, forwarded="203.0.113.7").status_code == 429
    assert _login(client, "boss", PASSWORD, forwarded="198.51.100.4").status_code == 302  # the owner, elsewhere
    client.logout()
    assert _login(client, "colleague", PASSWORD, forwarded="203.0.113.7").status_code == 302


def test_a_client_cannot_dodge_the_lock_by_writing_its_own_forwarded_for(client, users, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    _fail_until_locked(client, settings, forwarded="203.0.113.7")
    # The proxy appends the address it saw; what the client wrote before it is ignored.
    assert _login(client, "boss", PASSWORD, forwarded="192.0.2.1, 203.0.113.7").status_code == 429
    settings.TRUSTED_PROXY_COUNT = 0  # no proxy trusted: the header is ignored altogether
    _fail_until_locked(client, settings, remote="203.0.113.8", forwarded="192.0.2.1")
    assert _login(client, "boss", PASSWORD, remote="203.0.113.8", forwarded="192.0.2.99").status_code == 429


@pytest.mark.parametrize(
    ("count", "forwarded", "expected"),
    [
        (0, "192.0.2.1", "10.9.0.2"),
        (1, "192.0.2.1", "192.0.2.1"),
        (1, "6.6.6.6, 192.0.2.1", "192.0.2.1"),
        (2, "6.6.6.6, 192.0.2.1, 10.9.0.1", "192.0.2.1"),
        (2, "192.0.2.1", "192.0.2.1"),  # fewer entries than proxies: the left-most there is
        (1, "", "10.9.0.2"),  # not through the proxy
        (1, "not-an-address", "10.9.0.2"),
        (1, " 2001:db8::1 ", "2001:db8::1"),
    ],
)
def test_the_client_address_is_counted_from_the_right_of_x_forwarded_for(settings, count, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = count
    request = RequestFactory().get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected
