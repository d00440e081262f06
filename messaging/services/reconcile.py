"""Reconciliation: a message whose send's outcome is unknown is looked up at the provider, never resent blindly.

A message left in ``sending`` without a sid (its worker died around the provider call, a read
timeout, a TLS error) may or may not exist at the provider. ``message_reconcile`` asks the
provider (``provider.find``) for a message matching what was sent:

- found: its sid and status are adopted, as if the send had answered;
- not found: the message was never created, so sending it again cannot duplicate it: ``pending``;
- the provider cannot be asked: ``unknown`` at once, keeping its send time. Each beat run looks it
  up again until DELIVERY_UNKNOWN_GIVE_UP_MINUTES after the send; a lookup that still fails after
  that fails the message with error code ``unknown``.

Taking a message for a lookup re-stamps its ``claimed_at``, and every move after the lookup is
a conditional UPDATE from ``sending``/``unknown`` that still holds that stamp: two reconcilers
(or a reconciler and staff) never ask about one message at once, a stale answer never moves a
message that was sent again meanwhile, and running any of this twice changes nothing more.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from messaging import selectors
from messaging.models import Message, MessageStatus
from messaging.providers import ErrorKind, ProviderError, SendResult, get_provider, provider_name_for
from messaging.services import send, send_outcomes
from messaging.signals import message_statuses_changed

logger = logging.getLogger(__name__)

# A message in `unknown` is looked up again at most this often (the beat runs every minute).
UNKNOWN_LOOKUP_EVERY = timedelta(seconds=30)
# This many lookups failing in a row in one beat run: the provider cannot be asked now. The rest
# of that run's messages are not asked (each lookup may wait for the timeouts): stale `sending`
# ones become `unknown` at once and those past their give-up fail; the next run tries again.
LOOKUP_FAILURES_BEFORE_PAUSE = 5
LOOKUPS_AT_ONCE = 16  # concurrent lookups of one beat run


def messages_reconcile_stale(*, limit: int = 1000) -> int:
    """Reconcile stale `sending` messages without a sid and `unknown` ones; returns how many were looked at.

    Least recently asked first, so every unknown outcome gets its turn however many there are.
    The provider is asked LOOKUPS_AT_ONCE at a time (each lookup waits for the provider's
    latency: a worker killed with hundreds of sends in flight leaves hundreds to look up); the
    database work stays on this thread.
    """
    now = timezone.now()
    ids = list(
        Message.objects.filter(_reconcilable(now), provider_sid__isnull=True)
        .order_by("claimed_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    failing, unasked = 0, 0
    for start in range(0, len(ids), LOOKUPS_AT_ONCE):
        paused = None
        if failing >= LOOKUP_FAILURES_BEFORE_PAUSE:
            paused = ProviderError(ErrorKind.RETRYABLE, "", f"not asked: the last {failing} lookups failed")
        taken = [found for message_id in ids[start : start + LOOKUPS_AT_ONCE] if (found := _take(message_id))]
        askable = [(message, claim) for message, claim in taken if _askable(message) and paused is None]
        answers = dict(zip([m.pk for m, _ in askable], _lookups([m for m, _ in askable]), strict=True))
        for message, claim in taken:
            answer = paused or answers.get(message.pk)
            try:
                if isinstance(answer, Exception) and not isinstance(answer, ProviderError):
                    raise answer
                _, lookup_failed = _settle(message, claim, answer, quiet=paused is not None)
            except Exception:  # noqa: BLE001 - one message the code cannot handle must not stall the others
                logger.exception("reconciling message %s failed; the next run tries again", message.pk)
                continue
            if paused is None and message.pk in answers:
                failing = failing + 1 if lookup_failed else 0
            unasked += paused is not None
    if unasked:
        logger.warning("the provider's lookup failed %d times in a row; %d messages wait", failing, unasked)
    return len(ids)


def _lookups(messages: list[Message]) -> list[list[SendResult] | Exception]:
    """The messages' lookups at once; a lookup that raised (a bug, not the provider) gives its exception."""

    def guarded(message: Message) -> list[SendResult] | Exception:
        try:
            return _lookup(message)
        except Exception as exc:  # noqa: BLE001 - handed back to the caller's thread, which logs it
            return exc

    if len(messages) <= 1:
        return [guarded(message) for message in messages]
    with ThreadPoolExecutor(max_workers=len(messages), thread_name_prefix="lookup") as pool:
        return list(pool.map(guarded, messages))


def _reconcilable(now: datetime, *, force: bool = False) -> Q:
    """Stale `sending` messages (their worker or answer is lost) and `unknown` ones due for a lookup.

    ``force`` (staff asked) looks an unknown outcome up at once; a `sending` one is never taken
    before send_outcomes.STALE_SENDING_AFTER, which leaves a live send the time to finish.
    """
    asked_before = now if force else now - UNKNOWN_LOOKUP_EVERY
    unknown = Q(status=MessageStatus.UNKNOWN) & (Q(claimed_at__lt=asked_before) | Q(claimed_at__isnull=True))
    return Q(status=MessageStatus.SENDING, claimed_at__lt=now - send_outcomes.STALE_SENDING_AFTER) | unknown


def message_reconcile(message_id: int, *, force: bool = False) -> Message:
    """Find out at the provider whether a stale `sending` (or `unknown`) message was created; never resend blindly.

    Found: its sid and status are adopted. Not found: pending again (it was never created, so
    sending it cannot duplicate it). The provider cannot be asked: ``unknown`` until the give-up.
    """
    return _reconcile(message_id, force=force)[0]


def _reconcile(message_id: int, *, force: bool = False) -> tuple[Message, bool]:
    """``message_reconcile``, also saying whether the lookup failed."""
    taken = _take(message_id, force=force)
    if taken is None:
        return Message.objects.select_related("contact", "sender").get(pk=message_id), False
    message, claim = taken
    return _settle(message, claim, _lookup(message) if _askable(message) else None)


def _take(message_id: int, *, force: bool = False) -> tuple[Message, datetime] | None:
    """Re-claim the message for a lookup (claimed_at = now), so two reapers never reconcile it at once."""
    now = timezone.now()
    taken = Message.objects.filter(_reconcilable(now, force=force), pk=message_id, provider_sid__isnull=True).update(
        claimed_at=now
    )
    if not taken:
        return None
    return Message.objects.select_related("contact", "sender").get(pk=message_id), now


def _askable(message: Message) -> bool:
    """Erasure blanks the address: nothing to look up at the provider, no one to resend to."""
    return bool(message.to_address or message.contact)


def _lookup(message: Message) -> list[SendResult] | ProviderError:
    """The provider's messages matching what was sent (network only: any thread may ask)."""
    since = message.sending_at or message.created_at
    provider = get_provider(provider_name_for(message.sender.provider if message.sender else None))
    request = send.send_request_for(message)
    if message.from_address:  # the address it went out from: the sender's number may have changed since
        request = dataclasses.replace(request, from_=message.from_address)
    try:
        return provider.find(request, since)
    except ProviderError as exc:
        return exc


def _settle(
    message: Message, claim: datetime, answer: list[SendResult] | ProviderError | None, *, quiet: bool = False
) -> tuple[Message, bool]:
    """Apply a lookup's answer (None: it was not asked); says whether the lookup failed. ``quiet``: not logged."""
    old = message.status
    message, lookup_failed = _answer_apply(message, claim, answer, quiet)
    if message.status != old:
        message_id = message.pk
        transaction.on_commit(lambda: message_statuses_changed.send(sender=Message, message_ids=[message_id]))
    return message, lookup_failed


def _answer_apply(
    message: Message, now: datetime, answer: list[SendResult] | ProviderError | None, quiet: bool
) -> tuple[Message, bool]:
    if not _askable(message):
        text = send.ERASED_BEFORE_CONFIRMED
        return send.message_finish(
            message, MessageStatus.FAILED, claim=now, error_code="unknown", error_message=text
        ), False
    if isinstance(answer, ProviderError):
        return _lookup_failed(message, answer, now, quiet=quiet), True
    found = answer or []
    sids = [result.provider_sid for result in found]
    known = set(Message.objects.filter(provider_sid__in=sids).values_list("provider_sid", flat=True))
    candidates = [result for result in found if result.provider_sid not in known]
    if candidates:
        chosen = min(candidates, key=lambda result: (result.created_at or now, result.provider_sid))
        logger.warning("message %s reconciled with provider message %s", message.pk, chosen.provider_sid)
        return send.message_accepted(message, chosen, claim=now), False
    return _not_at_provider(message, now), False


def _not_at_provider(message: Message, claim: datetime) -> Message:
    """The provider holds no such message: sending it again cannot duplicate it."""
    if message.attempts >= send_outcomes.MAX_ATTEMPTS:
        text = f"not created at the provider after {message.attempts} attempts"
        return send.message_finish(message, MessageStatus.FAILED, claim=claim, error_code="unsent", error_message=text)
    Message.objects.filter(pk=message.pk, status__in=send.OUTCOME_AWAITED, claimed_at=claim).update(
        status=MessageStatus.PENDING,
        next_attempt_at=timezone.now(),
        error_message="not found at the provider after an unknown outcome; sending again",
        updated_at=timezone.now(),
    )
    if message.source_type_id is None:
        send.message_enqueue(message.pk, message.sender_id)
    message.refresh_from_db()
    return message


def _lookup_failed(message: Message, exc: ProviderError, now: datetime, *, quiet: bool = False) -> Message:
    """The provider could not be asked: `unknown` (its send time kept) until the give-up, then failed."""
    gives_up_at = (message.sending_at or message.created_at) + selectors.unknown_window()
    reason = exc.message or exc.code or "no answer"
    if now >= gives_up_at:
        text = (
            f"outcome unknown: the provider could not be asked before the give-up at {gives_up_at:%Y-%m-%d %H:%M} UTC "
            f"({reason}); check at the provider before sending it again"
        )
        return send.message_finish(
            message, MessageStatus.FAILED, claim=now, error_code="unknown", error_message=text[:500]
        )
    if not quiet:
        logger.warning("could not reconcile message %s yet: %s", message.pk, exc)
    text = (
        f"outcome unknown: the provider could not be asked ({reason}); "
        f"looked up again until {gives_up_at:%Y-%m-%d %H:%M} UTC"
    )
    Message.objects.filter(pk=message.pk, status__in=send.OUTCOME_AWAITED, claimed_at=now).update(
        status=MessageStatus.UNKNOWN, error_message=text[:500], updated_at=now
    )
    message.refresh_from_db()
    return message
