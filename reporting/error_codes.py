"""Twilio error codes a messaging report must name, with what each means (shared TWILIO.md)."""

from __future__ import annotations

TWILIO_ERROR_CODES: dict[str, str] = {
    "20429": "Too many concurrent requests (retried after backoff)",
    "21211": "Invalid 'To' phone number",
    "21408": "No permission to send to that region",
    "21606": "The 'From' number is not a valid, message-capable number",
    "21610": "The recipient has unsubscribed (STOP)",
    "21611": "The sender's message queue is full",
    "21614": "'To' is not a mobile number",
    "21654": "ContentSid is required",
    "30001": "Queue overflow",
    "30003": "Unreachable destination handset",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Filtered by the carrier",
    "30008": "Unknown error",
    "30034": "Message from an unregistered US A2P 10DLC number",
    "30036": "Validity period expired",
    "63016": "Free-form message outside the WhatsApp 24-hour window",
    "63018": "WhatsApp rate or tier limit reached",
    "90007": "Invalid validity period",
}

# Codes our own services write when no provider code applies.
PLATFORM_ERROR_CODES: dict[str, str] = {
    "": "No error code given",
    "unknown": "Delivery unknown: the provider could not be asked; check by hand",
    "unsent": "Not created at the provider after the last attempt",
    "duplicate": "The provider returned a message id already recorded",
}


def error_meaning(code: str) -> str:
    """What an error code means; a code outside the tables is named as such, never left blank."""
    if code in TWILIO_ERROR_CODES:
        return TWILIO_ERROR_CODES[code]
    if code in PLATFORM_ERROR_CODES:
        return PLATFORM_ERROR_CODES[code]
    return f"Twilio error {code} (see Twilio's error dictionary)"
