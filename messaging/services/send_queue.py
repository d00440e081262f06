"""Transactional sends: queued in Redis once their message is committed, sent in batches by a drain.

A message created one at a time (the messages API, a HELP answer, a resend) is not given a Celery
task of its own: publishing one and running it cost a worker more CPU than the send itself. After
commit its id goes onto a Redis list, and the same round trip wakes a drain unless one is already
queued (``SET NX`` on ``KICK_KEY``). The drain (``messaging.messages_send_queued``) deletes that
key before it looks, then takes ids off the list ``BATCH`` at a time and sends them through the
batch path (``send_batch.messages_send_batch``: one claim per slice, the sender threads, the same
send-outcome rule as a single send), until the list stays empty for ``LINGER`` seconds. The first
message of a quiet spell leaves at once; after a short batch the drain lets the next one gather.

- Nothing is lost: an id pushed while a drain runs is taken by it, or by the drain its kick
  queued (the key is gone once a drain has started looking). A message whose id went missing (a
  worker killed after taking it, Redis unreachable) is still ``pending`` in the database, and
  beat's ``messages_send_due`` sends it after a minute.
- Nothing is sent twice: the batch path claims each message with a conditional UPDATE, so an id
  taken by two drains, or sent by the sweep meanwhile, leaves once.
- A long list wakes one helper drain (``HELPER_KEY``), so two workers share a burst.
"""

from __future__ import annotations

import logging
import time

from config import observe
from messaging.services.send_batch import messages_send_batch

logger = logging.getLogger(__name__)

QUEUE_KEY = "messages:send:queue"
KICK_KEY = "messages:send:kick"
HELPER_KEY = "messages:send:helper"
KICK_TTL_MS = 5_000  # a kick whose task was lost stops holding the next one back after this
BATCH = 200  # ids taken off the list at once: one batch send
LINGER = 0.5  # seconds a drain keeps looking after the list empties
POLL = 0.02
# After a short batch the drain waits this long before it looks again: a batch's statements cost
# about as much for 6 messages as for 30. Measured per message: 1.2 ms of the worker's CPU and 2 ms
# of PostgreSQL's in batches of 6, 0.5 and 0.5 in batches of 30, 0.3 and 0.2 in batches of 200.
# A one-time password 0.1 s later is still on time.
GATHER = 0.1


def send_queue_push(message_id: int) -> None:
    """Queue a committed message for sending and wake a drain if none is queued (one Redis round trip)."""
    from messaging import tasks  # the tasks import the send services: a cycle at module level

    try:
        pipe = observe.redis_client().pipeline(transaction=False)
        pipe.rpush(QUEUE_KEY, message_id)
        pipe.set(KICK_KEY, 1, nx=True, px=KICK_TTL_MS)
        _, kicked = pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the message is stored: a task of its own, else the sweep
        logger.warning("could not queue message %s in Redis (%s); sending it with a task of its own", message_id, exc)
        _task_or_sweep(tasks.message_send, message_id)
        return
    if kicked:
        _task_or_sweep(tasks.messages_send_queued, None)


def _task_or_sweep(task, message_id: int | None) -> None:
    try:
        task.delay() if message_id is None else task.delay(message_id)
    except Exception as exc:  # noqa: BLE001 - the broker is down: beat's sweep sends what is pending
        logger.warning("could not queue a send task (%s); the sweep will send the message", exc)


def send_queue_drain(*, helper: bool = False) -> int:
    """Send what is queued, a batch at a time, until the list stays empty for LINGER; returns the ids taken."""
    client = observe.redis_client()
    if not helper:
        client.delete(KICK_KEY)  # from here on a new message wakes another drain, or is seen by this one
    taken, idle_since = 0, time.monotonic()
    try:
        while True:
            ids = client.lpop(QUEUE_KEY, BATCH)
            if not ids:
                if time.monotonic() - idle_since >= LINGER:
                    return taken
                time.sleep(POLL)
                continue
            if len(ids) == BATCH and not helper:
                _helper_wake(client)
            message_ids = sorted({int(value) for value in ids})
            taken += len(message_ids)
            messages_send_batch(message_ids)
            idle_since = time.monotonic()
            if len(ids) < BATCH:
                time.sleep(GATHER)  # a trickle: the next batch gathers a few, not one or two
    finally:
        if helper:
            client.delete(HELPER_KEY)


def _helper_wake(client) -> None:
    """A second drain for a backlog, unless one was woken in the last KICK_TTL_MS and is still working."""
    from messaging import tasks  # see send_queue_push

    if client.llen(QUEUE_KEY) >= BATCH and client.set(HELPER_KEY, 1, nx=True, px=KICK_TTL_MS):
        _task_or_sweep(tasks.messages_send_queued_helper, None)
