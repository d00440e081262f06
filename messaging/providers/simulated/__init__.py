"""The embedded default provider: accepts every send and plays a realistic life for it.

A few seconds after a send, Celery tasks deliver status callbacks (sent, delivered,
read on WhatsApp, a few percent undelivered or failed with real Twilio codes) and
now and then an inbound reply, through the very services the Twilio webhooks call,
so every page of the product comes alive without a Twilio account.
"""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from django.db import transaction
from django.utils import timezone

from audience.models import Channel
from audience.phones import phone_country
from config import observe
from messaging.providers.base import CountryPrice, MessagePrice, SendRequest, SendResult
from messaging.providers.simulated import prices
from messaging.providers.twilio.codes import CARRIER_FAILURES
from messaging.rendering import sms_segments

SIMULATED_ACCOUNT_SID = "AC" + "0" * 32
FAILURE_CODES = CARRIER_FAILURES  # it plays Twilio: the same codes, the same meanings
REPLIES = ("Thanks!", "Got it 👍", "OK", "What time?", "Thank you, see you then")
REFERENCE_TTL = 7 * 24 * 3600


@dataclass(frozen=True)
class Odds:
    failed: float = 0.02  # rejected downstream: "failed" with a code, straight after queued
    undelivered: float = 0.03  # "sent" then "undelivered" with a code
    read: float = 0.6  # WhatsApp only: share of delivered messages that are read
    reply: float = 0.05  # share of delivered messages that get an inbound reply
    first_delay: tuple[float, float] = (1.0, 3.0)
    step_delay: tuple[float, float] = (1.0, 4.0)


def simulated_sid(prefix: str = "SM") -> str:
    return prefix + uuid.uuid4().hex


def status_plan(channel: str, rng: random.Random, odds: Odds = Odds()) -> list[tuple[str, str]]:
    """The statuses a simulated message will go through: [(status, error_code), ...]."""
    draw = rng.random()
    if draw < odds.failed:
        return [("failed", rng.choice(FAILURE_CODES))]
    if draw < odds.failed + odds.undelivered:
        return [("sent", ""), ("undelivered", rng.choice(FAILURE_CODES))]
    plan = [("sent", ""), ("delivered", "")]
    if channel == Channel.WHATSAPP and rng.random() < odds.read:
        plan.append(("read", ""))
    return plan


class SimulatedProvider:
    name = "simulated"

    def __init__(self, odds: Odds = Odds(), seed: int | None = None):
        self.odds = odds
        self.rng = random.Random(seed)

    def send(self, request: SendRequest, on_sent: Callable[[], None] | None = None) -> SendResult:
        if on_sent is not None:
            on_sent()
        sid = self._sid_for(request.reference)
        plan = status_plan(request.channel, self.rng, self.odds)
        reply = self.rng.choice(REPLIES) if plan[-1][0] in ("delivered", "read") and self._draw(self.odds.reply) else ""
        step = {
            "sid": sid,
            "channel": request.channel,
            "to": request.to,
            "from_": request.from_ or request.messaging_service_sid,
            "steps": [list(item) for item in plan],
            "reply": reply,
        }
        if request.status_callback:  # as Twilio: no callback URL, no status callbacks (a test send)
            transaction.on_commit(lambda: steps_group(step))
        segments = sms_segments(request.body).segments if request.channel == Channel.SMS else 1
        # Unlike Twilio, it knows the price at once: no lookup after the final status is needed.
        price = prices.unit_price(phone_country(request.to), request.channel) * max(segments, 1)
        return SendResult(
            provider_sid=sid,
            status="queued",
            segments=segments,
            price=price,
            price_unit=prices.CURRENCY,
            created_at=timezone.now(),
        )

    def message_price(self, sid: str) -> MessagePrice:
        """Prices come with the send (``SendResult.price``): there is nothing to look up later."""
        return MessagePrice(price=None)

    def prices_for_country(self, country: str) -> list[CountryPrice]:
        country = country.upper()
        return [
            CountryPrice(country, channel, prices.unit_price(country, channel), prices.CURRENCY)
            for channel in (Channel.SMS, Channel.WHATSAPP)
        ]

    def find(self, request: SendRequest, since: datetime) -> list[SendResult]:
        sid = observe.redis_client().get(_reference_key(request.reference)) if request.reference else None
        return [SendResult(provider_sid=sid.decode(), status="queued")] if sid else []

    def _sid_for(self, reference: str) -> str:
        if not reference:
            return simulated_sid()
        sid = reference_sid(reference)
        # The shared client: Django's cache builds a Redis client for each call, which cost more
        # CPU than the rest of a simulated send.
        observe.redis_client().set(_reference_key(reference), sid, ex=REFERENCE_TTL)
        return sid

    def _draw(self, chance: float) -> bool:
        return self.rng.random() < chance


def reference_sid(reference: str) -> str:
    """The same reference always gets the same sid, as a provider with idempotency keys would."""
    return "SM" + hashlib.sha256(f"simulated:{reference}".encode()).hexdigest()[:32]


def _reference_key(reference: str) -> str:
    return f"simulated:ref:{reference}"


# Statuses are played a group at a time: the sends of GROUP_WINDOW seconds share one Celery task
# per step (a task each cost the worker more than the send it simulates, at hundreds a second).
GROUP_WINDOW = 0.2
_group: list[dict] = []
_group_lock = threading.Lock()


def steps_group(step: dict) -> None:
    """Queue a sent message's statuses with the others sent in the same GROUP_WINDOW."""
    from config.celery import app

    with _group_lock:
        _group.append(step)
        first = len(_group) == 1
    if app.conf.task_always_eager:  # tasks run in the caller (tests): so do the statuses
        steps_flush()
    elif first:
        timer = threading.Timer(GROUP_WINDOW, steps_flush)
        timer.daemon = True
        timer.start()


def steps_flush(odds: Odds = Odds()) -> None:
    """Play the grouped statuses' first step a few seconds from now, in one task."""
    from messaging.tasks import simulated_status_steps

    with _group_lock:
        steps = _group[:]
        _group.clear()
    if steps:
        delay = max(0.0, random.uniform(*odds.first_delay) - GROUP_WINDOW)
        simulated_status_steps.apply_async(args=[steps], countdown=delay)


def _address(channel: str, address: str) -> str:
    if channel == Channel.WHATSAPP and address and not address.lower().startswith("whatsapp:"):
        return f"whatsapp:{address}"
    return address


def simulated_step_run(step: dict) -> dict | None:
    """Play the next status of ``step`` (or its reply) through the webhook services; returns what is left."""
    from messaging.services.inbound import inbound_message_record
    from messaging.services.status import status_callback_record

    to, from_ = _address(step["channel"], step["to"]), _address(step["channel"], step["from_"])
    if step["steps"]:
        status, error_code = step["steps"][0]
        payload = {
            "MessageSid": step["sid"],
            "SmsSid": step["sid"],
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": SIMULATED_ACCOUNT_SID,
            "From": from_,
            "To": to,
            "ApiVersion": "2010-04-01",
            **({"ErrorCode": error_code} if error_code else {}),
        }
        status_callback_record(provider_sid=step["sid"], status=status, error_code=error_code, payload=payload)
        rest = {**step, "steps": step["steps"][1:]}
        return rest if rest["steps"] or rest["reply"] else None
    if step["reply"]:
        # Derived from the message's sid: a step run twice (a redelivered task) records one reply.
        sid = "SM" + hashlib.sha256(f"reply:{step['sid']}".encode()).hexdigest()[:32]
        payload = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": SIMULATED_ACCOUNT_SID,
            "From": to,
            "To": from_,
            "Body": step["reply"],
            "NumMedia": "0",
            "ApiVersion": "2010-04-01",
        }
        inbound_message_record(provider_sid=sid, from_address=to, to_address=from_, body=step["reply"], payload=payload)
    return None


def step_delay(odds: Odds = Odds()) -> float:
    return random.uniform(*odds.step_delay)


@cache
def simulated_provider() -> SimulatedProvider:
    return SimulatedProvider()
