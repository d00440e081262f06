"""Transactional sends: queued in Redis per sender once their message is committed, sent in paced batches.

A message created one at a time (the messages API, a HELP answer, a resend) is not given a Celery
task of its own: publishing one and running it cost a worker more CPU than the send itself. After
commit its id goes into its sender's queue (a sorted set, by id), the sender into the set of
senders with something queued (``READY_KEY``), and the same round trip wakes a drain unless one is
already queued (``SET NX`` on ``KICK_KEY``). The drain (``messaging.messages_send_queued``) deletes
that key before it looks, then serves the ready senders in turn: for each, it asks the sender's
pacing log how many sends it has room for now (``pacing.room``), takes that many of its lowest
ids (at most ``BATCH``) and sends them through the batch path (``send_batch.SendPipeline``: one
claim per slice, the sender threads, the same send-outcome rule as a single send), paced by
the sender's log (``messaging.pacing``), which campaigns on the same sender share: no second sees
more than the sender's MPS, whatever mix of campaign and transactional sends it carries. A sender
whose second is full is skipped until it has room; one drain serves every sender, however many
trickle one-time passwords at once.

- A drain gives its worker thread back after ``ROUND_SECONDS``, waking the next one if ids are
  left, so a slow sender's backlog never holds a thread for long. Messages a batch gave back
  unsent (pacing gave up while Redis was away, or the sender's pace, shared with campaigns, held
  them past the claims' window) go back into the queue, and the drain hands over to the next one.
- Nothing is lost: an id added while a drain runs is taken by it, or by the drain its kick
  queued (the key is gone once a drain has started looking); a sender leaves the ready set only
  in the same script that empties its queue. A message whose id went missing (a worker killed
  after taking it, Redis unreachable) is still ``pending`` in the database, and beat's
  ``messages_send_due`` queues it again after a minute; a sorted set holds an id once, so a
  backlog the sweep sees again does not grow.
- Nothing is sent twice: the batch path claims each message with a conditional UPDATE, so an id
  taken by two drains, or sent by the sweep meanwhile, leaves once.
- A long queue wakes one helper drain (``HELPER_KEY``), so two workers share a burst.
"""

from __future__ import annotations

import logging
import time

from config import observe
from messaging import pacing
from messaging.models import Sender
from messaging.services.send_batch import SendPipeline

logger = logging.getLogger(__name__)

READY_KEY = "messages:send:ready"
KICK_KEY = "messages:send:kick"
HELPER_KEY = "messages:send:helper"
KICK_TTL_MS = 5_000  # a kick whose task was lost stops holding the next one back after this
BATCH = 200  # ids taken off a sender's queue at once: one batch send
ROUND_SECONDS = 5.0  # a drain hands its thread to the next one after this long
LINGER = 0.5  # seconds a drain keeps looking after every queue empties
POLL = 0.02
# After a short batch the drain waits this long before it looks again: a batch's statements cost
# about as much for 6 messages as for 30. Measured per message: 1.2 ms of the worker's CPU and 2 ms
# of PostgreSQL's in batches of 6, 0.5 and 0.5 in batches of 30, 0.3 and 0.2 in batches of 200.
# A one-time password 0.1 s later is still on time.
GATHER = 0.1

# Takes up to ARGV[1] of the lowest ids of a sender's queue (KEYS[1]); the sender (ARGV[2]) leaves
# the ready set (KEYS[2]) when its queue is empty, in the same step, so a push never goes unseen.
_POP = """
local ids = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return ids
"""


def queue_key(sender_id: int | None) -> str:
    """The sender's queue; 0 holds messages without a sender (the send skips them)."""
    return f"messages:send:queue:{sender_id or 0}"


def send_queue_push(message_id: int, sender_id: int | None) -> None:
    """Queue a committed message for its sender and wake a drain if none is queued (one Redis round trip)."""
    from messaging import tasks  # the tasks import the send services: a cycle at module level

    try:
        pipe = _queued(observe.redis_client().pipeline(transaction=False), sender_id, [message_id])
        pipe.set(KICK_KEY, 1, nx=True, px=KICK_TTL_MS)
        *_, kicked = pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the message is stored: a task of its own, else the sweep
        logger.warning("could not queue message %s in Redis (%s); sending it with a task of its own", message_id, exc)
        _task_or_sweep(tasks.message_send, message_id)
        return
    if kicked:
        _task_or_sweep(tasks.messages_send_queued)


def _queued(pipe, sender_id: int | None, message_ids: list[int]):
    """``pipe`` with the ids added to the sender's queue and the sender marked ready."""
    pipe.zadd(queue_key(sender_id), {str(message_id): message_id for message_id in message_ids})
    pipe.sadd(READY_KEY, sender_id or 0)
    return pipe


def _task_or_sweep(task, *args) -> None:
    try:
        task.delay(*args)
    except Exception as exc:  # noqa: BLE001 - the broker is down: beat's sweep sends what is pending
        logger.warning("could not queue a send task (%s); the sweep will send the message", exc)


class _SenderPace:
    """A sender as a drain serves it: its MPS, its pacer, and when it may have room again."""

    def __init__(self, sender_id: int, sender: Sender | None):
        self.sender_id = sender_id
        self.mps = sender.effective_mps if sender is not None else 0
        self.pace = pacing.pacer(sender_id, self.mps) if self.mps else (lambda idle=None: True)
        self.not_before = 0.0  # time.monotonic()

    @classmethod
    def load(cls, sender_ids: list[int]) -> dict[int, _SenderPace]:
        rows = Sender.objects.filter(pk__in=[pk for pk in sender_ids if pk]).only("kind", "mps").in_bulk()
        return {pk: cls(pk, rows.get(pk)) for pk in sender_ids}

    def room(self) -> int:
        """Messages to take now: what the sender's second has room for, at most BATCH."""
        if not self.mps:
            return BATCH
        free, wait = pacing.room(self.sender_id, self.mps)
        if not free:
            self.not_before = time.monotonic() + wait
        return min(free, BATCH)


def send_queue_drain(*, helper: bool = False) -> int:
    """Send the ready senders' queues, paced, until they stay empty for LINGER or ROUND_SECONDS pass; returns
    the ids taken.

    One pipeline serves every sender: a sender's batch is handed over, not waited for, before the
    next sender's, and the answers are written as they come back (``SendPipeline``).
    """
    client = observe.redis_client()
    if not helper:
        client.delete(KICK_KEY)  # from here on a new message wakes another drain, or is seen by this one
    pop = client.register_script(_POP)
    pipeline = SendPipeline()
    senders: dict[int, _SenderPace] = {}
    taken, began = 0, time.monotonic()
    idle_since = began
    try:
        while True:
            ready = sorted(int(value) for value in client.smembers(READY_KEY))
            if not ready:
                pipeline.flush_if_due()
                if time.monotonic() - idle_since >= LINGER:
                    return taken
                time.sleep(POLL)
                continue
            senders.update(_SenderPace.load([pk for pk in ready if pk not in senders]))
            idle_since, sent, full, gave_back = time.monotonic(), False, False, False
            for sender_id in ready:
                sender = senders[sender_id]
                if sender.not_before > time.monotonic():
                    continue
                size = sender.room()
                if not size:
                    continue
                popped = pop(keys=[queue_key(sender_id), READY_KEY], args=[size, sender_id])
                message_ids = sorted(int(member) for member in popped[::2])
                if not message_ids:
                    continue
                taken += len(message_ids)
                sent, full = True, full or len(message_ids) == BATCH
                unsent = pipeline.send(message_ids, pace=sender.pace)
                if unsent:  # pacing gave up (Redis away) or the claims outlived their window: pending again
                    _queued(client.pipeline(transaction=False), sender_id, unsent).execute()
                    gave_back = True
            pipeline.flush_if_due()
            if full and not helper:
                _helper_wake(client)
            if gave_back or time.monotonic() - began >= ROUND_SECONDS:
                if client.scard(READY_KEY):
                    _wake(client)
                return taken
            if sent and not full:
                time.sleep(GATHER)  # a trickle: the next batch gathers a few, not one or two
            elif not sent:  # every ready sender's second is full: until the first has room, or a new one comes
                due = min(senders[sender_id].not_before for sender_id in ready)
                time.sleep(min(GATHER, max(POLL, due - time.monotonic())))
    finally:
        try:
            pipeline.drain()  # the answers of what was handed over
        finally:
            if helper:
                client.delete(HELPER_KEY)


def _wake(client) -> None:
    """A drain for what is left, unless one is queued and has not started."""
    from messaging import tasks  # see send_queue_push

    if client.set(KICK_KEY, 1, nx=True, px=KICK_TTL_MS):
        _task_or_sweep(tasks.messages_send_queued)


def _helper_wake(client) -> None:
    """A second drain for a backlog, unless one was woken in the last KICK_TTL_MS and is still working."""
    from messaging import tasks  # see send_queue_push

    if client.set(HELPER_KEY, 1, nx=True, px=KICK_TTL_MS):
        _task_or_sweep(tasks.messages_send_queued_helper)
