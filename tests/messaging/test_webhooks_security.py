"""Webhook signatures: checked against PUBLIC_BASE_URL, fail closed, nothing stored when refused."""

import logging
from urllib.parse import urlencode

import pytest

from messaging.models import Message, MessageStatus, ProviderCallback
from tests import wsgi
from tests.twilio_webhooks import (
    INBOUND_PATH,
    PUBLIC,
    SID,
    STATUS_PATH,
    TOKEN,
    inbound_payload,
    post_form,
    signature,
    status_payload,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def twilio_settings(settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.PUBLIC_BASE_URL = PUBLIC


def nothing_stored() -> bool:
    return not ProviderCallback.objects.exists() and not Message.objects.filter(direction="inbound").exists()


@pytest.mark.parametrize("path", [STATUS_PATH, INBOUND_PATH])
def test_a_missing_signature_gets_403(client, path):
    params = status_payload(SID, "sent") if path == STATUS_PATH else inbound_payload(SID, "STOP")
    response = client.post(path, data=urlencode(params), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 403
    assert nothing_stored()


@pytest.mark.parametrize("path", [STATUS_PATH, INBOUND_PATH])
def test_a_signature_made_with_another_token_gets_403(client, path):
    params = status_payload(SID, "sent") if path == STATUS_PATH else inbound_payload(SID, "STOP")
    assert post_form(client, path, params, token="not-our-token").status_code == 403
    assert nothing_stored()


def test_a_tampered_payload_gets_403(client):
    params = status_payload(SID, "sent")
    sig = signature(PUBLIC + STATUS_PATH, params)
    tampered = {**params, "MessageStatus": "failed", "SmsStatus": "failed"}
    response = client.post(
        STATUS_PATH,
        data=urlencode(tampered),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": sig},
    )
    assert response.status_code == 403
    assert nothing_stored()


def test_the_url_is_rebuilt_from_public_base_url_not_from_host_or_forwarded_headers(client):
    params = status_payload(SID, "sent")
    forwarded = {"X_FORWARDED_HOST": "attacker.example.net", "X_FORWARDED_PROTO": "https"}
    for url in ("http://testserver", "https://attacker.example.net"):
        assert post_form(client, STATUS_PATH, params, sign_url=url + STATUS_PATH, **forwarded).status_code == 403
    assert nothing_stored()
    # Signed for the public URL, it passes whatever the request says about its host.
    assert post_form(client, STATUS_PATH, params, **forwarded).status_code == 200


def test_the_query_string_is_part_of_the_signed_url(client):
    params = status_payload(SID, "sent")
    response = post_form(client, STATUS_PATH + "?attempt=2", params, sign_url=PUBLIC + STATUS_PATH)
    assert response.status_code == 403
    assert post_form(client, STATUS_PATH + "?attempt=2", params).status_code == 200


def test_without_an_auth_token_every_webhook_is_refused_loudly(client, settings, caplog):
    settings.TWILIO_AUTH_TOKEN = ""
    with caplog.at_level(logging.ERROR, logger="messaging.webhooks"):
        assert post_form(client, STATUS_PATH, status_payload(SID, "sent"), token="").status_code == 403
        assert post_form(client, INBOUND_PATH, inbound_payload(SID, "STOP"), token="").status_code == 403
    assert [r.levelno for r in caplog.records].count(logging.ERROR) == 2
    assert "TWILIO_AUTH_TOKEN is not set" in caplog.records[0].getMessage()
    assert nothing_stored()


def test_a_replayed_signed_request_changes_nothing(client):
    Message.objects.create(channel="sms", provider_sid=SID, status=MessageStatus.QUEUED)
    params = status_payload(SID, "delivered")
    for _ in range(3):
        assert post_form(client, STATUS_PATH, params).status_code == 200
    assert ProviderCallback.objects.count() == 1


def wsgi_post(path: str, params: dict, sig: str | None) -> tuple[str, bytes]:
    headers = {} if sig is None else {"HTTP_X_TWILIO_SIGNATURE": sig}
    status, _, content = wsgi.wsgi_post(path, urlencode(params).encode(), "application/x-www-form-urlencoded", headers)
    return status, content


def test_the_production_wsgi_fast_path_serves_signed_status_callbacks():
    message = Message.objects.create(channel="sms", provider_sid=SID, status=MessageStatus.QUEUED)
    params = status_payload(SID, "delivered")
    assert wsgi_post(STATUS_PATH, params, None)[0].startswith("403")
    assert wsgi_post(STATUS_PATH, params, signature(PUBLIC + STATUS_PATH, params, "wrong"))[0].startswith("403")
    assert nothing_stored()
    assert wsgi_post(STATUS_PATH, {**params, "MessageStatus": "nope"}, "x")[0].startswith("403")
    bad = {**params, "MessageStatus": "nope", "SmsStatus": "nope"}
    assert wsgi_post(STATUS_PATH, bad, signature(PUBLIC + STATUS_PATH, bad))[0].startswith("400")
    assert wsgi_post(STATUS_PATH, params, signature(PUBLIC + STATUS_PATH, params))[0].startswith("200")
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED


def test_other_requests_take_the_ordinary_django_path():
    params = inbound_payload(SID, "hello")
    status, content = wsgi_post(INBOUND_PATH, params, signature(PUBLIC + INBOUND_PATH, params))
    assert status.startswith("200") and content.endswith(b"<Response/>")


@pytest.mark.parametrize("digest", ["", "abc", "z" * 64])
def test_a_json_callback_whose_body_hash_is_not_a_digest_gets_403_not_500(client, digest):
    response = client.post(
        f"{STATUS_PATH}?bodySHA256={digest}",
        data=b'{"a": 1}',
        content_type="application/json",
        HTTP_X_TWILIO_SIGNATURE="c2lnbmF0dXJl",
    )
    assert response.status_code == 403
    assert nothing_stored()
