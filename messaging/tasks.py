"""Celery tasks for sending: each takes ids, loads fresh state and calls one service."""

from __future__ import annotations

import logging

from celery import shared_task

from messaging import retention
from messaging.pricing import fetch as price_fetch
from messaging.providers.simulated import simulated_step_run, step_delay
from messaging.services import reconcile, send, send_queue

logger = logging.getLogger(__name__)


@shared_task(name="messaging.message_send", ignore_result=True)
def message_send(message_id: int) -> None:
    send.message_send(message_id)


@shared_task(name="messaging.message_queue", ignore_result=True)
def message_queue(message_id: int, sender_id: int | None) -> None:
    """A retry whose time has come: into its sender's paced queue."""
    send_queue.send_queue_push(message_id, sender_id)


@shared_task(name="messaging.messages_send_queued", ignore_result=True)
def messages_send_queued() -> int:
    """Send the messages queued one at a time after commit (messaging.services.send_queue), in paced batches."""
    return send_queue.send_queue_drain()


@shared_task(name="messaging.messages_send_queued_helper", ignore_result=True)
def messages_send_queued_helper() -> int:
    return send_queue.send_queue_drain(helper=True)


@shared_task(name="messaging.messages_send_due", ignore_result=True)
def messages_send_due() -> int:
    return send.messages_send_due()


@shared_task(name="messaging.message_reconcile", ignore_result=True)
def message_reconcile(message_id: int) -> None:
    reconcile.message_reconcile(message_id)


@shared_task(name="messaging.messages_reconcile_stale", ignore_result=True)
def messages_reconcile_stale() -> int:
    return reconcile.messages_reconcile_stale()


@shared_task(name="messaging.simulated_status_steps", ignore_result=True)
def simulated_status_steps(steps: list[dict]) -> None:
    """The simulated provider's next status (or reply) of each message, then the ones after, a few seconds apart."""
    rest = []
    for step in steps:
        try:
            left = simulated_step_run(step)
        except Exception:  # one message's trouble never holds the others' statuses back
            logger.exception("the simulated status of %s was not played", step.get("sid"))
            continue
        if left is not None:
            rest.append(left)
    if rest:
        simulated_status_steps.apply_async(args=[rest], countdown=step_delay())


@shared_task(name="messaging.simulated_status_step", ignore_result=True)
def simulated_status_step(step: dict) -> None:
    """One message's statuses (a task queued before they were grouped)."""
    simulated_status_steps([step])


@shared_task(name="messaging.retention_purge", ignore_result=True)
def retention_purge() -> dict[str, int]:
    """Clear old raw payloads and inbound bodies (beat, hourly); safe to run twice."""
    return retention.retention_purge()


@shared_task(name="messaging.prices_fetch", ignore_result=True)
def prices_fetch() -> dict[str, int]:
    """Fetch the prices of final messages from the provider (beat), paced; safe to run twice."""
    return price_fetch.message_prices_fetch()


@shared_task(name="messaging.clicks_drain", ignore_result=True)
def clicks_drain() -> int:
    """Write the redirect's streamed clicks (beat, every 2 s); safe to run twice, and after a killed run."""
    from messaging.links.clicks import clicks_drain as drain

    return drain()


@shared_task(name="messaging.links_expire", ignore_result=True)
def links_expire() -> int:
    """Blank the URLs of links past RETENTION_LINK_DAYS (beat, hourly); their codes answer a plain page."""
    from messaging.links.clicks import links_expire as expire

    return expire()
