"""Twilio's words: its status names and its error codes, each with what it means to us.

The rest of the platform speaks ``MessageStatus`` and ``ErrorKind``; a stored error code is only
ever turned into words or a kind through ``messaging.providers`` (``error_meaning``,
``error_kind``), which reads these tables.
"""

from __future__ import annotations

from typing import NamedTuple

from messaging.models import MessageStatus
from messaging.providers.base import ErrorKind

# Status callbacks and API responses name these; each is one of ours.
STATUSES: dict[str, MessageStatus] = {
    "accepted": MessageStatus.QUEUED,
    "scheduled": MessageStatus.QUEUED,
    "queued": MessageStatus.QUEUED,
    "sending": MessageStatus.SENDING,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "partially_delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "canceled": MessageStatus.CANCELED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "receiving": MessageStatus.RECEIVED,
    "received": MessageStatus.RECEIVED,
}


class Code(NamedTuple):
    meaning: str
    kind: ErrorKind = ErrorKind.PERMANENT
    throttled: bool = False  # the account or sender went past a rate: slow down


# The codes a report must name (shared TWILIO.md); status callbacks carry the code alone.
ERRORS: dict[str, Code] = {
    "429": Code("Too many requests (retried after backoff)", ErrorKind.RETRYABLE, throttled=True),
    "20429": Code("Too many concurrent requests (retried after backoff)", ErrorKind.RETRYABLE, throttled=True),
    "21211": Code("Invalid 'To' phone number"),
    "21408": Code("No permission to send an SMS to that region"),
    "21606": Code("The 'From' number is not a valid, message-capable number"),
    "21610": Code("The recipient has unsubscribed (STOP)", ErrorKind.OPTED_OUT),
    "21611": Code("The sender's message queue is full"),
    "21614": Code("'To' is not a mobile number"),
    "21654": Code("ContentSid is required"),
    "30001": Code("Queue overflow"),
    "30003": Code("Unreachable destination handset"),
    "30005": Code("Unknown destination handset"),
    "30006": Code("Landline or unreachable carrier"),
    "30007": Code("Filtered by the carrier"),
    "30008": Code("Unknown error"),
    "30034": Code("Message from an unregistered US A2P 10DLC number"),
    "30036": Code("Validity period expired"),
    "63016": Code("Free-form message outside the WhatsApp 24-hour window", ErrorKind.OUTSIDE_WINDOW),
    "63018": Code("WhatsApp rate or tier limit reached", throttled=True),
    "90007": Code("Invalid validity period"),
}

# Delivery failures a carrier reports after acceptance (what the simulated provider plays).
CARRIER_FAILURES = ("30003", "30005", "30006", "30007", "30008")


def error_kind(code: str) -> ErrorKind:
    found = ERRORS.get(code)
    return found.kind if found else ErrorKind.PERMANENT


def error_meaning(code: str) -> str | None:
    found = ERRORS.get(code)
    return found.meaning if found else None


def throttle_codes() -> frozenset[str]:
    return frozenset(code for code, found in ERRORS.items() if found.throttled)
