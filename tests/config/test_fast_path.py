"""The API's fast doors (config.fast_path): token-authenticated POSTs skip the middleware they do not need
and answer exactly as the ordinary path does."""

from __future__ import annotations

import contextlib
import json
import logging
from unittest import mock

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.wsgi import get_wsgi_application
from rest_framework.authtoken.models import Token

from audience.models import Contact
from campaigns.models import Event
from config import fast_path
from tests import wsgi
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(staff_user) -> str:
    return Token.objects.get_or_create(user=staff_user)[0].key


def _post(path: str, body: dict, headers: dict, query: str = ""):
    return wsgi.wsgi_post(path, json.dumps(body).encode(), "application/json", headers, query)


@contextlib.contextmanager
def _sessions_opened():
    """Counts the requests that went through the session middleware."""
    calls, original = [], SessionMiddleware.process_request

    def counted(self, request):
        calls.append(request.path)
        return original(self, request)

    with mock.patch.object(SessionMiddleware, "process_request", counted):
        yield calls


def test_a_token_post_to_an_event_door_skips_the_session_middleware(token):
    contact = ContactFactory()
    headers = {"HTTP_AUTHORIZATION": f"Token {token}", "HTTP_IDEMPOTENCY_KEY": "fast-1"}
    body = {"contact": contact.pk, "name": "order_shipped", "properties": {"total": 5}}
    with _sessions_opened() as sessions:
        status, response_headers, content = _post("/api/v1/events/", body, headers, "wait=false")
        batch_status, _, batch = _post(
            "/api/v1/events/batch", {"events": [{**body, "idempotency_key": "fast-2"}]}, headers
        )
    assert status.startswith("202") and json.loads(content)["status"] == "accepted"
    assert batch_status.startswith("200") and json.loads(batch)["accepted"] == 1
    assert sessions == []
    assert Event.objects.filter(idempotency_key__in=["fast-1", "fast-2"]).count() == 2
    assert response_headers["Content-Length"] == str(len(content))
    assert len(response_headers["X-Request-ID"]) >= 8


def test_the_fast_door_answers_as_the_ordinary_path_does(token):
    """Same status, body and headers (but the request id) for the same refused message."""
    ordinary = get_wsgi_application()  # Django's handler with every middleware, no fast path
    headers = {"HTTP_AUTHORIZATION": f"Token {token}", "HTTP_X_REQUEST_ID": "same-request-id-1"}
    body = {"contact": 999_999_999, "template": 1, "sender": 1}
    logged, handler = [], logging.Handler(logging.WARNING)
    handler.emit = logged.append
    logging.getLogger("django.request").addHandler(handler)
    try:
        fast = _post("/api/v1/messages/", body, headers)
    finally:
        logging.getLogger("django.request").removeHandler(handler)
    assert [record.getMessage() for record in logged] == ["Bad Request: /api/v1/messages/"]  # as Django logs a 4xx
    with mock.patch.object(wsgi, "application", ordinary):
        slow = _post("/api/v1/messages/", body, headers)
    assert fast[0] == slow[0] == "400 Bad Request"
    assert fast[2] == slow[2] and b"Invalid pk" in fast[2]
    assert fast[1].keys() == slow[1].keys()
    for name in ("Content-Type", "Content-Length", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy"):
        assert fast[1][name] == slow[1][name], name
    assert fast[1]["X-Request-ID"] == "same-request-id-1"


def test_the_fast_door_checks_the_host_as_the_ordinary_path_does(token):
    headers = {"HTTP_AUTHORIZATION": f"Token {token}", "HTTP_HOST": "evil.example"}
    status, _, _ = _post("/api/v1/messages/", {}, headers)
    assert status.startswith("400")


def test_a_bad_token_is_refused_on_the_fast_door(token):
    status, headers, _ = _post("/api/v1/messages/", {}, {"HTTP_AUTHORIZATION": "Token nope"})
    assert status.startswith("401") and headers["WWW-Authenticate"] == "Token"


def test_requests_without_a_token_take_the_ordinary_path(token, client, staff_user):
    """A session-signed POST needs the session middleware and DRF's CSRF check: never the fast door."""
    client.force_login(staff_user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    contact = ContactFactory()
    body = {"contact": contact.pk, "name": "order_shipped"}
    with _sessions_opened() as sessions:
        status, _, content = _post("/api/v1/events/", body, {"HTTP_COOKIE": cookie, "HTTP_IDEMPOTENCY_KEY": "s-1"})
    assert sessions == ["/api/v1/events/"]
    assert status.startswith("403") and b"CSRF" in content  # no CSRF token: refused, as on the ordinary path
    assert not Contact.objects.filter(pk=contact.pk, events__isnull=False).exists()


def test_a_fast_route_takes_only_middleware_the_settings_have():
    match = mock.Mock()
    with pytest.raises(ValueError, match="must be in settings.MIDDLEWARE"):
        fast_path._chain(match, ("config.middleware.NoSuchMiddleware",))
