"""Messages whose outcome is unknown: settling them when their run ends, and what staff do about them.

Staff may, for messages in ``unknown``:

- look them up again at once (``reconcile.message_reconcile`` without waiting for the beat);
- resend them: a new, deliberate attempt, recorded as such (pending again, sent once more;
  a duplicate is possible if the provider did hold the first one, which is why it is a choice);
- mark them failed.

Each action writes one ``MessageResolution`` per message (who, when, what came of it). A message
something caused (a campaign recipient) is resolved by that something: the app that owns the
source registers a resolver (``source_resolver_register``), which checks what only it can (a
cancelled run's messages cannot be resent), calls ``messages_resolve`` and keeps its own rows in
step. Every door (admin, API) goes through ``messages_resolve_any``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audience.services import actor_name
from messaging.models import Message, MessageResolution, MessageStatus, ResolutionAction
from messaging.services import reconcile, send
from messaging.signals import message_statuses_changed

# Seconds a claimed message may still be on its way to the provider: a batch hands it over
# within CLAIM_SEND_WINDOW of its claim, then the request takes at most the connect + read timeouts.
IN_FLIGHT_MARGIN = 5.0
UNSENT_RUN_ENDED = "not created at the provider, and its run had ended: not sent again"

Resolver = Callable[..., dict[int, str]]
_resolvers: dict[tuple[str, str], Resolver] = {}  # (app label, model name) of the source -> its resolver


class ResolutionRefused(ValidationError):
    """A resolution was refused; the message says why."""


def in_flight_for() -> timedelta:
    """How long after its claim a message in `sending` may still be answered by a live send."""
    from messaging.services.send_batch import CLAIM_SEND_WINDOW

    seconds = CLAIM_SEND_WINDOW + settings.TWILIO_CONNECT_TIMEOUT + settings.TWILIO_READ_TIMEOUT + IN_FLIGHT_MARGIN
    return timedelta(seconds=seconds)


def _notify(message_ids: list[int]) -> None:
    if message_ids:
        transaction.on_commit(lambda: message_statuses_changed.send(sender=Message, message_ids=sorted(message_ids)))


# --- Settling --------------------------------------------------------------------------------


def messages_mark_unknown(message_ids: Iterable[int], *, claimed_before: datetime, why: str) -> list[int]:
    """Messages in `sending` without a sid, claimed before ``claimed_before``, become `unknown`; returns their ids.

    Their send time is kept (the give-up counts from it) and the reconciler looks them up as usual.
    """
    lost = Q(provider_sid__isnull=True, claimed_at__lt=claimed_before)
    text = f"outcome unknown: {why}"[:500]
    moved = _move(list(message_ids), MessageStatus.SENDING, MessageStatus.UNKNOWN, where=lost, error_message=text)
    _notify(moved)
    return moved


def message_fail_unsent(message_id: int, text: str = UNSENT_RUN_ENDED) -> bool:
    """A pending message that must not be sent any more (its run ended) fails with ``text``; False if it moved."""
    now = timezone.now()
    moved = Message.objects.filter(pk=message_id, status=MessageStatus.PENDING).update(
        status=MessageStatus.FAILED, error_code="unsent", error_message=text[:500], failed_at=now, updated_at=now
    )
    _notify([message_id] if moved else [])
    return bool(moved)


def _move(message_ids: list[int], from_status: str, to_status: str, *, where: Q | None = None, **fields) -> list[int]:
    """Move these messages if still in ``from_status`` (and ``where``), in one locked UPDATE; returns those moved."""
    if not message_ids:
        return []
    now = timezone.now()
    with transaction.atomic():
        moving = list(
            Message.objects.select_for_update()
            .filter(where or Q(), pk__in=message_ids, status=from_status)
            .values_list("pk", flat=True)
        )
        Message.objects.filter(pk__in=moving).update(status=to_status, updated_at=now, **fields)
    return moving


# --- Staff resolutions -----------------------------------------------------------------------


def source_resolver_register(model, resolver: Resolver) -> None:
    """Messages whose source is a ``model`` are resolved by ``resolver(message_ids, action, actor=...)``."""
    _resolvers[(model._meta.app_label, model._meta.model_name)] = resolver


def _resolver_for(source_type_id: int | None) -> Resolver:
    if source_type_id is None:
        return messages_resolve
    source = ContentType.objects.get_for_id(source_type_id)  # cached by Django
    return _resolvers.get((source.app_label, source.model), messages_resolve)


def action_checked(action: str) -> ResolutionAction:
    if action not in ResolutionAction.values:
        raise ResolutionRefused({"action": [f"{action!r} is not one of: {', '.join(ResolutionAction.values)}"]})
    return ResolutionAction(action)


def messages_unknown_checked(message_ids: Iterable[int]) -> list[int]:
    """The ids, refused with a reason naming them when some are not (or no longer) outcome unknown."""
    ids = sorted(set(message_ids))
    if not ids:
        raise ResolutionRefused({"messages": ["no message given"]})
    statuses = dict(Message.objects.filter(pk__in=ids).values_list("pk", "status"))
    if missing := [pk for pk in ids if pk not in statuses]:
        raise ResolutionRefused({"messages": [f"no message {', '.join(map(str, missing))}"]})
    if settled := [f"{pk} is {statuses[pk]}" for pk in ids if statuses[pk] != MessageStatus.UNKNOWN]:
        raise ResolutionRefused({"messages": [f"only outcomes unknown can be resolved: {'; '.join(settled[:20])}"]})
    return ids


def messages_resolve_any(message_ids: Iterable[int], action: str, *, actor) -> dict[int, str]:
    """The door for messages of any source: each group goes to its source's resolver; returns {id: status}."""
    action = action_checked(action)
    ids = messages_unknown_checked(message_ids)
    groups: dict[Resolver, list[int]] = defaultdict(list)
    for pk, source_type_id in Message.objects.filter(pk__in=ids).values_list("pk", "source_type_id"):
        groups[_resolver_for(source_type_id)].append(pk)
    results: dict[int, str] = {}

    def resolve_groups() -> None:
        for resolver, group in groups.items():
            results.update(resolver(group, action, actor=actor))

    if action == ResolutionAction.LOOKUP:  # calls the provider: no transaction held open meanwhile
        resolve_groups()
    else:
        with transaction.atomic():  # all or nothing: one group refused (a cancelled run) refuses the request
            resolve_groups()
    return results


def messages_resolve(message_ids: Iterable[int], action: str, *, actor, audit: bool = True) -> dict[int, str]:
    """Apply ``action`` to these unknown outcomes and audit it per message; returns {id: status after}.

    A message that left `unknown` meanwhile (the reconciler found it) is left as it is, and the
    audit row says so. Look-ups call the provider: never call this inside a long transaction.
    ``audit=False``: the caller moves more first, then calls ``resolutions_record`` itself.
    """
    action = action_checked(action)
    ids = sorted(set(message_ids))
    who = actor_name(actor) or "system"
    if action == ResolutionAction.LOOKUP:
        for pk in ids:
            reconcile.message_reconcile(pk, force=True)
    elif action == ResolutionAction.RESEND:
        moved = _move(
            ids,
            MessageStatus.UNKNOWN,
            MessageStatus.PENDING,
            next_attempt_at=None,
            error_code="",
            error_message=f"outcome unknown; resent by {who}"[:500],
        )
        resent = Message.objects.filter(pk__in=moved, source_type__isnull=True).values_list("pk", "sender_id")
        for pk, sender_id in resent:
            send.message_enqueue(pk, sender_id)
        _notify(moved)
    else:
        moved = _move(
            ids,
            MessageStatus.UNKNOWN,
            MessageStatus.FAILED,
            error_code="unknown",
            error_message=f"outcome unknown; marked failed by {who}"[:500],
            failed_at=timezone.now(),
        )
        _notify(moved)
    statuses = dict(Message.objects.filter(pk__in=ids).values_list("pk", "status"))
    if audit:
        resolutions_record(statuses, action, actor=actor)
    return statuses


def resolutions_record(statuses: dict[int, str], action: str, *, actor) -> None:
    """One audit row per message: who did ``action`` and the status it left the message in."""
    who = actor_name(actor) or "system"
    MessageResolution.objects.bulk_create(
        MessageResolution(message_id=pk, action=action, actor=who, detail={"status_after": status})
        for pk, status in sorted(statuses.items())
    )
