"""What the provider charged for each message, fetched once the message is final or long "sent".

Twilio's create answer has no price yet, and its status callbacks never carry one: the price is
filled in at Twilio some time after the final status. So a beat task (``messaging.prices_fetch``)
asks for it, message by message:

- Which: outbound messages with a sid, in a final status (``PRICED_STATUSES``) for at least
  ``PRICE_FETCH_DELAY_SECONDS``, or still ``sent`` after ``PRICE_FETCH_SENT_AFTER_SECONDS`` (many
  SMS and WhatsApp messages never get a delivery receipt, yet are charged), without a price and not
  given up, whose next try is due. Messages of a simulated sender are never asked: the simulated
  provider prices them at send.
- Claim: a batch of ``PRICE_FETCH_BATCH`` is taken with ``FOR UPDATE SKIP LOCKED`` and leased
  (``price_next_at`` moves ``LEASE`` ahead), so two runs at once never ask about the same message,
  and a run that dies leaves its batch to be taken again when the lease ends.
- Pace: every request waits its turn in one Redis-kept rate (``PRICE_FETCH_RATE`` a second, all
  workers together), well under Twilio's concurrency limit; one request at a time per run.
- Store: a price is written by a conditional UPDATE (``price IS NULL``): a second run, or a late
  answer, changes nothing.
- Retry: a refusal for too many requests (429/20429), a server error or a network failure is tried
  again after a backoff with jitter; a 429 also hands the rest of the batch back for later. A price
  still null is asked again the same way. After ``PRICE_FETCH_MAX_ATTEMPTS`` tries, or at once for a
  permanent refusal (the message is unknown to the provider), the message is given up with the
  reason in ``price_error``.

Logs carry counts and message ids, never a phone number.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from messaging.models import PRICE_DUE_STATUSES, PRICED_STATUSES, Direction, Message, MessageStatus, Provider, Sender
from messaging.pricing.pace import Pace
from messaging.providers import ErrorKind, MessagePrice, ProviderError, get_provider
from messaging.signals import message_prices_changed

logger = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)  # a claimed message waits this long before another run may take it
BACKOFF_FIRST = 60.0  # seconds before the second try; doubled each try after
BACKOFF_MAX = 3600.0
AFTER_THROTTLE = timedelta(seconds=30)  # the rest of a batch a 429 interrupted is due again then


def _due(now: datetime) -> Q:
    final = Q(status__in=PRICED_STATUSES, updated_at__lte=now - timedelta(seconds=settings.PRICE_FETCH_DELAY_SECONDS))
    left_sent = Q(
        status=MessageStatus.SENT, updated_at__lte=now - timedelta(seconds=settings.PRICE_FETCH_SENT_AFTER_SECONDS)
    )
    # status__in repeats what the two cases say so that the planner matches the partial index's predicate.
    return (
        Q(direction=Direction.OUTBOUND, price__isnull=True, provider_sid__isnull=False, price_error="")
        & Q(status__in=PRICE_DUE_STATUSES)
        & (final | left_sent)
        & (Q(price_next_at__isnull=True) | Q(price_next_at__lte=now))
        & ~Q(sender__in=Sender.objects.filter(provider=Provider.SIMULATED).values("pk"))
    )


def message_prices_claim(now: datetime, limit: int) -> list[tuple[int, str, int]]:
    """Take up to ``limit`` due messages for this run: (id, sid, tries so far), oldest final first."""
    with transaction.atomic():
        rows = list(
            Message.objects.filter(_due(now))
            .order_by("updated_at")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", "provider_sid", "price_attempts")[:limit]
        )
        Message.objects.filter(pk__in=[row[0] for row in rows]).update(price_next_at=now + LEASE)
    return rows


def message_prices_fetch(*, now: datetime | None = None, limit: int | None = None, pace: Pace | None = None) -> dict:
    """Fetch the prices of one batch of due messages; returns what came of them, counted."""
    tally: Counter[str] = Counter()
    if settings.MESSAGING_PROVIDER == Provider.SIMULATED:
        return dict(tally)  # every send went to the simulated provider, which priced it then
    now = now or timezone.now()
    claimed = message_prices_claim(now, limit or settings.PRICE_FETCH_BATCH)
    if not claimed:
        return dict(tally)
    provider = get_provider()  # the configured provider: the one whose prices come after the send
    pace = pace or Pace(settings.PRICE_FETCH_RATE)
    priced: list[int] = []
    for index, (pk, sid, attempts) in enumerate(claimed):
        pace.wait()
        try:
            answer = provider.message_price(sid)
        except ProviderError as exc:
            tally[_record_failure(pk, attempts, exc)] += 1
            if exc.throttled:  # the account is over its limit: the rest waits for a later run
                rest = [row[0] for row in claimed[index + 1 :]]
                Message.objects.filter(pk__in=rest, price__isnull=True).update(price_next_at=now + AFTER_THROTTLE)
                if rest:
                    tally["handed_back"] += len(rest)
                break
            continue
        if answer.price is None:
            tally[_record_unpriced(pk, attempts)] += 1
        elif _record_price(pk, answer):
            priced.append(pk)
            tally["priced"] += 1
        else:
            tally["already_priced"] += 1
    if priced:
        message_prices_changed.send(sender=Message, message_ids=priced)
    logger.info("message prices: %s", ", ".join(f"{key} {value}" for key, value in sorted(tally.items())))
    return dict(tally)


def _record_price(pk: int, answer: MessagePrice) -> bool:
    return bool(
        Message.objects.filter(pk=pk, price__isnull=True).update(
            price=answer.price, price_unit=answer.currency[:3], price_next_at=None, price_error=""
        )
    )


def backoff(attempts: int) -> timedelta:
    """The wait after ``attempts`` tries: doubling from BACKOFF_FIRST, capped, with +-20 % jitter."""
    seconds = min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX)
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))


def _again_or_give_up(pk: int, attempts: int, reason: str, *, permanent: bool = False) -> str:
    attempts += 1
    if permanent or attempts >= settings.PRICE_FETCH_MAX_ATTEMPTS:
        given_up = reason if permanent else f"no price after {attempts} tries: {reason}"
        Message.objects.filter(pk=pk, price__isnull=True).update(
            price_attempts=attempts, price_next_at=None, price_error=given_up[:200]
        )
        logger.warning("message %s: price given up (%s)", pk, given_up[:200])
        return "given_up"
    Message.objects.filter(pk=pk, price__isnull=True).update(
        price_attempts=attempts, price_next_at=timezone.now() + backoff(attempts)
    )
    return "retry"


def _record_unpriced(pk: int, attempts: int) -> str:
    return _again_or_give_up(pk, attempts, "the provider has not priced it")


def _record_failure(pk: int, attempts: int, exc: ProviderError) -> str:
    reason = f"provider error {exc.code}: {exc.message}".strip()[:160]
    return _again_or_give_up(pk, attempts, reason, permanent=exc.kind != ErrorKind.RETRYABLE)
