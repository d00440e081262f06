"""Fuzzing the Twilio webhooks: whatever arrives gets a 4xx or an idempotent 2xx, never a 5xx, and
never a half-written row (an inbound message without its event, an event without its message).
"""

from urllib.parse import quote_from_bytes, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messaging.models import Direction, Message, ProviderCallback
from tests.twilio_webhooks import (
    INBOUND_PATH,
    PUBLIC,
    STATUS_PATH,
    TOKEN,
    inbound_payload,
    post_form,
    signature,
    status_payload,
)

pytestmark = pytest.mark.django_db
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
PATHS = [STATUS_PATH, INBOUND_PATH]

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)
fields = st.dictionaries(
    st.sampled_from(list(inbound_payload("SMx", "x")) + ["X", "MediaUrl0"]) | text, text, max_size=20
)


@pytest.fixture(autouse=True)
def twilio_settings(settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.PUBLIC_BASE_URL = PUBLIC


def assert_no_half_written_rows() -> None:
    inbound = Message.objects.filter(direction=Direction.INBOUND)
    assert not inbound.filter(callbacks__isnull=True).exists(), "an inbound message without its callback"
    assert not ProviderCallback.objects.filter(kind="inbound", message__isnull=True).exists(), "an orphan inbound event"


def assert_handled(response) -> None:
    assert response.status_code < 500, response.content[:200]


@FUZZ
@given(params=fields, path=st.sampled_from(PATHS))
def test_random_signed_form_fields_never_500(client, params, path):
    assert_handled(post_form(client, path, params))
    assert_no_half_written_rows()


@FUZZ
@given(
    sid=st.text(min_size=1, max_size=200),
    status=st.text(max_size=100),
    to=st.text(max_size=500),
    body=st.text(max_size=5000),
    num_media=st.text(max_size=30),
)
def test_oversized_and_odd_values_in_known_fields_never_500(client, sid, status, to, body, num_media):
    assert_handled(post_form(client, STATUS_PATH, status_payload(sid, status) | {"To": to}))
    payload = inbound_payload(sid, body, NumMedia=num_media) | {"From": to}
    assert_handled(post_form(client, INBOUND_PATH, payload))
    assert_no_half_written_rows()


@FUZZ
@given(raw=st.binary(max_size=2000), path=st.sampled_from(PATHS), encoding=st.sampled_from(["latin-1", "junk"]))
def test_odd_encodings_and_percent_junk_never_500(client, raw, path, encoding):
    """Bytes that are not UTF-8, a latin-1 form, stray %-escapes: refused or handled, never a crash."""
    if encoding == "latin-1":
        body = urlencode(inbound_payload("SM" + "ab" * 16, raw.decode("latin-1")), encoding="latin-1")
    else:
        body = "Body=" + quote_from_bytes(raw) + "&MessageSid=%ZZ%&From=%E2%28%A1&" + raw.decode("latin-1")
    response = client.generic(  # generic(): the test client would re-encode post() data itself
        "POST",
        path,
        data=body.encode("latin-1", "replace"),
        content_type="application/x-www-form-urlencoded; charset=latin-1",
        headers={"X-Twilio-Signature": signature(PUBLIC + path, {})},
    )
    assert_handled(response)
    assert_no_half_written_rows()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("size", [70 * 1024, 3 * 1024 * 1024])
def test_huge_bodies_are_refused_with_400_and_store_nothing(client, path, size):
    params = inbound_payload("SM" + "cd" * 16, "x" * size)
    response = post_form(client, path, params)
    assert response.status_code == 400
    assert not Message.objects.exists() and not ProviderCallback.objects.exists()


def test_an_invalid_utf8_body_with_a_valid_signature_is_not_a_500(client):
    params = inbound_payload("SM" + "ef" * 16, "hello")
    body = urlencode(params).encode() + b"&Extra=%FF%FE%80"
    response = client.post(
        INBOUND_PATH,
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature(PUBLIC + INBOUND_PATH, params)},
    )
    assert response.status_code in (200, 400, 403)
    assert_no_half_written_rows()


@FUZZ
@given(body=text, times=st.integers(min_value=2, max_value=4), n=st.integers(min_value=1, max_value=10**6))
def test_replays_with_valid_signatures_change_nothing_after_the_first(client, body, times, n):
    sid = f"SM{n:032x}"
    payload = inbound_payload(sid, body)
    first = post_form(client, INBOUND_PATH, payload)
    assert_handled(first)
    snapshot = (
        list(Message.objects.filter(provider_sid=sid).values("body", "status", "contact_id")),
        ProviderCallback.objects.filter(provider_sid=sid).count(),
    )
    for _ in range(times - 1):
        again = post_form(client, INBOUND_PATH, payload)
        assert again.status_code == first.status_code
        assert_handled(again)
    assert snapshot == (
        list(Message.objects.filter(provider_sid=sid).values("body", "status", "contact_id")),
        ProviderCallback.objects.filter(provider_sid=sid).count(),
    )
    for status in ("sent", "delivered", "sent"):
        assert_handled(post_form(client, STATUS_PATH, status_payload(sid, status)))
    assert ProviderCallback.objects.filter(provider_sid=sid, status="delivered").count() <= 1
    assert_no_half_written_rows()
