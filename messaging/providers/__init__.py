"""The provider boundary: ``get_provider(name)`` for sending, and the words the rest of the platform
uses for what a provider said (``status_for``, ``error_kind``, ``error_meaning``, ``THROTTLE_CODES``).

Every provider-specific name and code lives in its own package (``messaging/providers/twilio/``);
the simulated provider plays Twilio's codes, so Twilio's tables are the ones read here.
"""

from __future__ import annotations

from django.conf import settings

from messaging.models import MessageStatus
from messaging.providers.base import (
    CountryPrice,
    ErrorKind,
    MessagePrice,
    MessagingProvider,
    ProviderError,
    SendRequest,
    SendResult,
)
from messaging.providers.twilio import STATUS_CALLBACK_PATH
from messaging.providers.twilio import codes as twilio_codes

__all__ = [
    "CountryPrice",
    "ErrorKind",
    "MessagePrice",
    "MessagingProvider",
    "ProviderError",
    "SendRequest",
    "SendResult",
    "THROTTLE_CODES",
    "UnknownStatus",
    "error_kind",
    "error_meaning",
    "get_provider",
    "provider_name_for",
    "status_callback_url",
    "status_for",
]

# Codes the platform writes itself when no provider code applies.
PLATFORM_ERRORS: dict[str, str] = {
    "": "No error code given",
    "unknown": "Delivery unknown: the provider could not be asked; check by hand",
    "unsent": "Not created at the provider after the last attempt",
    "duplicate": "The provider returned a message id already recorded",
}

# Error codes that mean a sender or account went past a rate (alerts count them per sender).
THROTTLE_CODES: frozenset[str] = twilio_codes.throttle_codes()


class UnknownStatus(ValueError):
    """The provider sent a status name we do not know."""


def status_for(provider_status: str) -> MessageStatus:
    """Our status for a provider's status name (any case)."""
    try:
        return twilio_codes.STATUSES[provider_status.lower()]
    except KeyError:
        raise UnknownStatus(f"unknown message status {provider_status!r}") from None


def error_kind(code: str) -> ErrorKind:
    """How the platform treats a stored error code: retry, give up, opted out, outside the window."""
    return twilio_codes.error_kind(code)


def error_meaning(code: str) -> str:
    """What an error code means; a code outside the tables is named as such, never left blank."""
    if code in PLATFORM_ERRORS:
        return PLATFORM_ERRORS[code]
    return twilio_codes.error_meaning(code) or f"Provider error {code} (see the provider's error dictionary)"


def status_callback_url() -> str:
    return settings.PUBLIC_BASE_URL + STATUS_CALLBACK_PATH


def provider_name_for(sender_provider: str | None) -> str:
    """The embedded default (MESSAGING_PROVIDER=simulated) never reaches Twilio, whatever a sender says."""
    if settings.MESSAGING_PROVIDER == "simulated":
        return "simulated"
    return sender_provider or settings.MESSAGING_PROVIDER


def get_provider(name: str | None = None) -> MessagingProvider:
    name = name or settings.MESSAGING_PROVIDER
    if name == "twilio":
        # Each provider builds on this module's types: loaded on use, which also keeps twilio out of
        # processes that never call it.
        from messaging.providers.twilio.client import twilio_provider

        return twilio_provider()
    if name == "simulated":
        from messaging.providers.simulated import simulated_provider

        return simulated_provider()
    raise ValueError(f"unknown messaging provider {name!r}")
