"""Transactional sends: queued in Redis per sender once their message is committed, sent in paced batches.

A message created one at a time (the messages API, a HELP answer, a resend) is not given a Celery
task of its own: publishing one and running it cost a worker more CPU than the send itself. After
commit its id goes into its sender's queue (a sorted set, by id), and the same round trip wakes
that sender's drain unless one is already queued (``SET NX`` on the sender's kick key). The drain
(``messaging.messages_send_queued``) deletes that key before it looks, then takes the lowest ids
a batch at a time and sends them through the batch path (``send_batch.messages_send_batch``: one
claim per slice, the sender threads, the same send-outcome rule as a single send), paced by the
sender's log (``messaging.pacing``), which campaigns on the same sender share: no second sees
more than the sender's MPS, whatever mix of campaign and transactional sends it carries.

- A batch is what the sender may send in ``ROUND_SECONDS`` (at most ``BATCH``), and a drain
  gives its worker thread back after ``ROUND_SECONDS``, waking the next drain if ids are left:
  a slow sender's backlog never holds a thread for long, nor its batch's claims past their window.
  Messages a batch gave back unsent (pacing gave up while Redis was away, or the sender's pace,
  shared with campaigns, held them past the claims' window) go back into the queue, and the drain
  hands over to the next one.
- Nothing is lost: an id added while a drain runs is taken by it, or by the drain its kick
  queued (the key is gone once a drain has started looking). A message whose id went missing (a
  worker killed after taking it, Redis unreachable) is still ``pending`` in the database, and
  beat's ``messages_send_due`` queues it again after a minute; a sorted set holds an id once, so
  a backlog the sweep sees again does not grow.
- Nothing is sent twice: the batch path claims each message with a conditional UPDATE, so an id
  taken by two drains, or sent by the sweep meanwhile, leaves once.
- A fast sender's long queue wakes one helper drain (``helper_key``), so two workers share a burst.
"""

from __future__ import annotations

import logging
import time
from typing import cast

from config import observe
from messaging import pacing
from messaging.models import Sender
from messaging.services.send_batch import messages_send_batch

logger = logging.getLogger(__name__)

KICK_TTL_MS = 5_000  # a kick whose task was lost stops holding the next one back after this
BATCH = 200  # ids taken off a queue at once: one batch send
ROUND_SECONDS = 5.0  # a drain hands its thread to the next one after this long
LINGER = 0.5  # seconds a drain keeps looking after its queue empties
POLL = 0.02
# After a short batch the drain waits this long before it looks again: a batch's statements cost
# about as much for 6 messages as for 30. Measured per message: 1.2 ms of the worker's CPU and 2 ms
# of PostgreSQL's in batches of 6, 0.5 and 0.5 in batches of 30, 0.3 and 0.2 in batches of 200.
# A one-time password 0.1 s later is still on time.
GATHER = 0.1


def queue_key(sender_id: int | None) -> str:
    """The sender's queue; 0 holds messages without a sender (the send skips them)."""
    return f"messages:send:queue:{sender_id or 0}"


def kick_key(sender_id: int | None) -> str:
    return f"messages:send:kick:{sender_id or 0}"


def helper_key(sender_id: int | None) -> str:
    return f"messages:send:helper:{sender_id or 0}"


def send_queue_push(message_id: int, sender_id: int | None) -> None:
    """Queue a committed message for its sender and wake a drain if none is queued (one Redis round trip)."""
    from messaging import tasks  # the tasks import the send services: a cycle at module level

    try:
        pipe = observe.redis_client().pipeline(transaction=False)
        pipe.zadd(queue_key(sender_id), {str(message_id): message_id})
        pipe.set(kick_key(sender_id), 1, nx=True, px=KICK_TTL_MS)
        _, kicked = pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the message is stored: a task of its own, else the sweep
        logger.warning("could not queue message %s in Redis (%s); sending it with a task of its own", message_id, exc)
        _task_or_sweep(tasks.message_send, message_id)
        return
    if kicked:
        _task_or_sweep(tasks.messages_send_queued, sender_id or 0)


def _task_or_sweep(task, *args) -> None:
    try:
        task.delay(*args)
    except Exception as exc:  # noqa: BLE001 - the broker is down: beat's sweep sends what is pending
        logger.warning("could not queue a send task (%s); the sweep will send the message", exc)


def batch_size(mps: int | None) -> int:
    """Ids a drain takes at once: what the sender may send in ROUND_SECONDS, at least 1, at most BATCH."""
    return BATCH if not mps else max(1, min(BATCH, int(mps * ROUND_SECONDS)))


def _sender_mps(sender_id: int) -> int | None:
    sender = Sender.objects.filter(pk=sender_id).only("kind", "mps").first() if sender_id else None
    return sender.effective_mps if sender is not None else None


def send_queue_drain(sender_id: int = 0, *, helper: bool = False) -> int:
    """Send the sender's queue, paced, until it stays empty for LINGER or ROUND_SECONDS pass; returns the ids taken."""
    client = observe.redis_client()
    key = queue_key(sender_id)
    if not helper:
        client.delete(kick_key(sender_id))  # from here on a new message wakes another drain, or is seen by this one
    mps = _sender_mps(sender_id)
    size = batch_size(mps)
    pace = pacing.pacer(sender_id, mps) if mps else (lambda idle=None: True)
    taken, began = 0, time.monotonic()
    idle_since = began
    try:
        while True:
            popped = cast(list[tuple[bytes, float]], client.zpopmin(key, size))
            if not popped:
                if time.monotonic() - idle_since >= LINGER:
                    return taken
                time.sleep(POLL)
                continue
            if len(popped) == BATCH and not helper:
                _helper_wake(client, sender_id)
            message_ids = sorted(int(member) for member, _ in popped)
            taken += len(message_ids)
            unsent = messages_send_batch(message_ids, pace=pace).unsent
            if unsent:  # pacing gave up (Redis away) or the claims outlived their window: pending again
                client.zadd(key, {str(message_id): message_id for message_id in unsent})
            idle_since = time.monotonic()
            if unsent or idle_since - began >= ROUND_SECONDS:
                if client.exists(key):
                    _wake(client, sender_id)
                return taken
            if len(popped) < size:
                time.sleep(GATHER)  # a trickle: the next batch gathers a few, not one or two
    finally:
        if helper:
            client.delete(helper_key(sender_id))


def _wake(client, sender_id: int) -> None:
    """A drain for what is left, unless one is queued and has not started."""
    from messaging import tasks  # see send_queue_push

    if client.set(kick_key(sender_id), 1, nx=True, px=KICK_TTL_MS):
        _task_or_sweep(tasks.messages_send_queued, sender_id)


def _helper_wake(client, sender_id: int) -> None:
    """A second drain for a backlog, unless one was woken in the last KICK_TTL_MS and is still working."""
    from messaging import tasks  # see send_queue_push

    if client.zcard(queue_key(sender_id)) >= BATCH and client.set(helper_key(sender_id), 1, nx=True, px=KICK_TTL_MS):
        _task_or_sweep(tasks.messages_send_queued_helper, sender_id)
