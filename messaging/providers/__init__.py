"""Provider registry: ``get_provider(name)`` returns the process-wide instance for the current settings."""

from __future__ import annotations

from django.conf import settings

from messaging.providers.base import ErrorKind, MessagingProvider, ProviderError, SendRequest, SendResult

__all__ = [
    "ErrorKind",
    "MessagingProvider",
    "ProviderError",
    "SendRequest",
    "SendResult",
    "get_provider",
    "provider_name_for",
    "status_callback_url",
]

STATUS_CALLBACK_PATH = "/webhooks/twilio/status/"


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
        from messaging.providers.twilio import twilio_provider

        return twilio_provider()
    if name == "simulated":
        from messaging.providers.simulated import simulated_provider

        return simulated_provider()
    raise ValueError(f"unknown messaging provider {name!r}")
