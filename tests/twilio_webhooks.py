"""Recorded-shape Twilio webhook payloads and a signing client, shared by the webhook tests."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

TOKEN = "webhook-test-auth-token-0123456789"
PUBLIC = "https://hooks.example.com"
ACCOUNT_SID = "AC" + "3f" * 16
STATUS_PATH = "/webhooks/twilio/status/"
INBOUND_PATH = "/webhooks/twilio/inbound/"
SID = "SM" + "a1" * 16
BUSINESS_SMS = "+14155550100"
BUSINESS_WHATSAPP = "whatsapp:+14155238886"


def status_payload(sid: str, status: str, *, error_code: str = "", whatsapp: bool = False) -> dict[str, str]:
    """A status callback as Twilio posts it (fields from TWILIO.md)."""
    prefix = "whatsapp:" if whatsapp else ""
    payload = {
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": prefix + "+254712345678",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": BUSINESS_WHATSAPP if whatsapp else BUSINESS_SMS,
        "ApiVersion": "2010-04-01",
    }
    if whatsapp:
        payload["ChannelPrefix"] = "whatsapp"
    if status == "delivered" and not whatsapp:
        payload["RawDlrDoneDate"] = "2611272150"
    if error_code:
        payload["ErrorCode"] = error_code
    return payload


def inbound_payload(sid: str, body: str, *, phone: str = "+254712345678", whatsapp: bool = False, **extra: str):
    """An inbound message as Twilio posts it to the number's webhook."""
    payload = {
        "ToCountry": "US",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "To": BUSINESS_WHATSAPP if whatsapp else BUSINESS_SMS,
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": ("whatsapp:" if whatsapp else "") + phone,
        "ApiVersion": "2010-04-01",
    }
    if whatsapp:
        payload |= {"ProfileName": "Wanjiru", "WaId": phone.lstrip("+")}
    return payload | extra


def signature(url: str, params: dict | None = None, token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params or {})


def post_form(client, path: str, params: dict, *, sign_url: str | None = None, token: str = TOKEN, **headers):
    """POST form-encoded and signed over PUBLIC + path (or ``sign_url``), as Twilio does."""
    sig = signature(sign_url or PUBLIC + path, params, token)
    return client.post(
        path,
        data=urlencode(params),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": sig, **headers},
    )


def post_json(client, path: str, params: dict, *, body: str | None = None):
    """POST the JSON variant: bodySHA256 in the URL, the signature over the URL alone."""
    raw = json.dumps(params) if body is None else body
    path_with_hash = f"{path}?bodySHA256={hashlib.sha256(json.dumps(params).encode()).hexdigest()}"
    sig = signature(PUBLIC + path_with_hash)
    return client.post(path_with_hash, data=raw, content_type="application/json", headers={"X-Twilio-Signature": sig})
