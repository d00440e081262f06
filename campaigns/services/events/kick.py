"""Waking the matchers: one Redis round trip at most per stored request, a second matcher for a backlog."""

from __future__ import annotations

import logging
import time

from campaigns.models import PendingEvent
from config import observe

logger = logging.getLogger(__name__)


KICK_KEY = "events:match:kick"
KICK_TTL_MS = 5_000  # a kick whose task was lost stops holding the next one back after this
# A process that kicked this recently skips the round trip: the matcher it woke (or found
# queued) looks again until MATCHER_LINGER seconds pass with nothing pending, longer than this.
KICK_QUIET = 0.1
MATCHER_LINGER = 1.0
# A lingering matcher that sees new events waits this long for more before it matches: single
# events trickling in are then answered a few dozen at a time, not one or two, for the same dozen
# statements a batch (1.3 ms of a worker's CPU for each single event when it did not wait).
MATCH_GATHER = 0.2
_last_kick = 0.0


def events_kick() -> None:
    """Wake a matcher unless one is already queued and has not started looking (one Redis round trip).

    The matcher deletes the key before it looks, so an event committed before this call is
    either seen by a matcher already queued or wakes a new one; one committed within KICK_QUIET
    of this process's last kick is seen by the matcher lingering after that kick. Beat's sweep
    catches what a lost task or an unreachable Redis left behind.
    """
    global _last_kick
    from campaigns.tasks import events_match_task

    now = time.monotonic()
    if now - _last_kick < KICK_QUIET:
        return
    _last_kick = now
    try:
        if observe.redis_client().set(KICK_KEY, 1, nx=True, px=KICK_TTL_MS):
            events_match_task.delay()
    except Exception as exc:  # noqa: BLE001 - the event is stored; the sweep matches it
        logger.warning("could not wake an event matcher (the sweep will match the events): %s", exc)


def events_linger(seconds: float = MATCHER_LINGER, poll: float = 0.05) -> bool:
    """Watch for pending events until ``seconds`` pass with none; True as soon as some are there."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if PendingEvent.objects.exists():
            return True
        time.sleep(poll)
    return False


def events_kick_clear() -> None:
    """A matcher starting to look: the next stored event wakes another."""
    try:
        observe.redis_client().delete(KICK_KEY)
    except Exception as exc:  # noqa: BLE001
        logger.warning("could not clear the matcher kick: %s", exc)


HELPER_KEY = "events:match:helper"


def helper_wake() -> None:
    """Queue a second matcher unless one was woken in the last 5 s and is still working."""
    from campaigns.tasks import events_match_helper

    try:
        if observe.redis_client().set(HELPER_KEY, 1, nx=True, px=KICK_TTL_MS):
            events_match_helper.delay()
    except Exception as exc:  # noqa: BLE001 - the first matcher carries on alone
        logger.warning("could not wake a second event matcher: %s", exc)


def helper_done() -> None:
    try:
        observe.redis_client().delete(HELPER_KEY)
    except Exception as exc:  # noqa: BLE001 - the key expires by itself
        logger.warning("could not clear the second matcher's key: %s", exc)
