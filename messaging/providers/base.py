"""The one small interface every messaging provider meets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"  # never processed by the provider (429, 5xx, connection refused): safe to retry
    PERMANENT = "permanent"  # invalid number and the like: retrying cannot help
    OPTED_OUT = "opted_out"  # 21610: the recipient sent STOP at the provider
    OUTSIDE_WINDOW = "outside_window"  # 63016: WhatsApp free-form text outside the 24 h window


@dataclass(frozen=True)
class SendRequest:
    """One message to send. Addresses are E.164 (or the sender's own form); the provider adds prefixes."""

    to: str
    channel: str
    from_: str = ""
    messaging_service_sid: str = ""
    body: str = ""
    content_sid: str = ""
    content_variables: dict[str, str] = field(default_factory=dict)
    status_callback: str = ""
    reference: str = ""  # our own marker (the message id), for reconciliation after a crash


@dataclass(frozen=True)
class SendResult:
    provider_sid: str
    status: str  # the provider's status name, e.g. "queued"
    segments: int | None = None
    price: Decimal | None = None
    price_unit: str = ""
    created_at: datetime | None = None
    body: str = ""


@dataclass(frozen=True)
class MessagePrice:
    """What the provider charged for one message; ``price`` is None while it has not said yet."""

    price: Decimal | None
    currency: str = ""  # ISO 4217, upper case
    status: str = ""  # the provider's status name when asked


@dataclass(frozen=True)
class CountryPrice:
    """The price of one message (one SMS segment) to a country on a channel, as the provider lists it."""

    country: str  # ISO 3166 alpha-2, upper case
    channel: str
    price: Decimal
    currency: str


class ProviderError(Exception):
    """A send that did not go through, classified for the send service."""

    def __init__(
        self,
        kind: ErrorKind,
        code: str = "",
        message: str = "",
        *,
        accepted_unknown: bool = False,
        throttled: bool = False,
    ):
        super().__init__(f"{kind}: {code} {message}".strip())
        self.kind = kind
        self.code = code
        self.message = message
        # True when the request may have reached the provider and created a message (read timeout):
        # the send service must reconcile, never resend blindly.
        self.accepted_unknown = accepted_unknown
        # True when the provider refused for too many concurrent requests: fewer in flight, then retry.
        self.throttled = throttled


class MessagingProvider(Protocol):
    name: str

    def send(self, request: SendRequest, on_sent: Callable[[], None] | None = None) -> SendResult:
        """Send one message or raise ProviderError.

        ``on_sent`` is called once the request has left (written to the network), before the
        answer: the pacing marks the send then, not when it was merely about to leave.
        """

    def find(self, request: SendRequest, since: datetime) -> list[SendResult]:
        """Messages the provider holds that match ``request`` and were created at or after ``since``.

        Raises ProviderError when the provider cannot be asked; an empty list means it has none.
        """

    def message_price(self, sid: str) -> MessagePrice:
        """What the provider charged for message ``sid``. Raises ProviderError when it cannot be asked."""

    def prices_for_country(self, country: str) -> list[CountryPrice]:
        """The provider's prices for sending to ``country`` (ISO code), one per channel it lists.

        An empty list means it lists none; raises ProviderError when it cannot be asked.
        """
