"""What each kind of alert rule measures: a value per subject ("" for the platform as a whole).

A probe reads rows and Redis, never writes. A subject absent from a probe's answer counts as
clear (a queue that emptied, a run that finished).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from kombu.exceptions import ChannelError

from campaigns.models import CampaignRun, RunStatus
from config import observe
from config.celery import app
from messaging.models import Direction
from messaging.providers import THROTTLE_CODES
from reporting.alerting.models import AlertKind, AlertRule

logger = logging.getLogger(__name__)

PING_TIMEOUT = 1.0
# Outbound messages are sent within minutes of being created: older ones are left out so the
# queries stay on the (direction, created_at) index.
LOOKBACK = dt.timedelta(days=2)


def send_failure_rate(rule: AlertRule, now: dt.datetime) -> dict[str, float]:
    """failed / (accepted + failed) among outbound messages over the window, given enough of them."""
    since = now - dt.timedelta(minutes=rule.window_minutes)
    sql = """
        SELECT count(*) FILTER (WHERE COALESCE(queued_at, sent_at) >= %(since)s),
               count(*) FILTER (WHERE failed_at >= %(since)s)
        FROM messaging_message
        WHERE direction = %(outbound)s AND created_at >= %(lookback)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"since": since, "lookback": now - LOOKBACK, "outbound": Direction.OUTBOUND})
        accepted, failed = cursor.fetchone()
    if accepted + failed < int(rule.params.get("min_messages", 20)):
        return {}
    return {"": failed / (accepted + failed)}


def broker_queues(names: list[str]) -> dict[str, dict[str, Any]]:
    """Depth of each queue and, on Redis, the age in seconds of its oldest task.

    Tasks carry ``published_at`` (config.logging adds it at publish); kombu LPUSHes and BRPOPs,
    so the oldest task is the list's last element.
    """
    result: dict[str, dict[str, Any]] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        channel = conn.default_channel
        client = getattr(channel, "client", None)  # the redis-py client on the Redis transport
        for name in names:
            try:
                depth = channel.queue_declare(queue=name, passive=True).message_count
            except ChannelError:  # Redis keeps no key for an empty queue
                depth = 0
            age = None
            if depth and client is not None:
                age = _oldest_age(client.lindex(name, -1))
            result[name] = {"depth": depth, "oldest_age_seconds": age}
    return result


def _oldest_age(raw: bytes | None) -> float | None:
    try:
        published = float(json.loads(raw)["headers"]["published_at"])
    except (TypeError, ValueError, KeyError):  # not our task format, or published without the header
        return None
    return max(timezone.now().timestamp() - published, 0.0)


def _queue_names(rule: AlertRule) -> list[str]:
    return list(rule.params.get("queues") or [app.conf.task_default_queue])


def queue_depth(rule: AlertRule, now: dt.datetime) -> dict[str, float]:
    return {name: float(q["depth"]) for name, q in broker_queues(_queue_names(rule)).items() if q["depth"]}


def queue_oldest_task(rule: AlertRule, now: dt.datetime) -> dict[str, float]:
    # Ages are measured against ``now`` (tests evaluate at a later instant than the wall clock).
    lag = (now - timezone.now()).total_seconds()
    return {
        name: (q["oldest_age_seconds"] + lag) / 60
        for name, q in broker_queues(_queue_names(rule)).items()
        if q["oldest_age_seconds"] is not None
    }


def celery_workers() -> list[str]:
    replies = app.control.ping(timeout=PING_TIMEOUT) or []
    return sorted(name for reply in replies for name in reply)


def no_workers(rule: AlertRule, now: dt.datetime) -> dict[str, float]:
    return {"": float(len(celery_workers()))}


def beat_stale(rule: AlertRule, now: dt.datetime) -> dict[str, float]:
    """Minutes since beat last sent a task (django-celery-beat saves last_run_at every few minutes)."""
    last = PeriodicTask.objects.aggregate(last=Max("last_run_at"))["last"]
    if last is None:
        return {}  # beat never ran here: nothing to compare with
    return {"": (now - last).total_seconds() / 60}


def webhook_signature_failures(rule: AlertRule, now: dt.datetime) -> dict[str, float]:
    # The current minute counts whole: a burst is seen at once, and a window of W minutes spans W + 1 keys.
    since = now - dt.timedelta(minutes=rule.window_minutes)
    return {"": float(observe.signature_failures_since(since.timestamp(), now.timestamp()))}


def run_stuck(rule: AlertRule, now: dt.datetime) -> dict[str, float]:
    """Minutes since each running run with recipients to send last took a batch (or started)."""
    runs = CampaignRun.objects.filter(status=RunStatus.RUNNING).exclude(pending=0, sending=0)
    return {
        str(run.pk): (now - (run.dispatched_at or run.started_at)).total_seconds() / 60
        for run in runs.only("pk", "dispatched_at", "started_at")
    }


def sender_throttled(rule: AlertRule, now: dt.datetime) -> dict[str, float]:
    """Per sender: outbound messages whose last error in the window said the sender was throttled."""
    codes = [str(code) for code in rule.params.get("error_codes") or sorted(THROTTLE_CODES)]
    sql = """
        SELECT sender_id, count(*) FROM messaging_message
        WHERE direction = %(outbound)s AND created_at >= %(lookback)s
          AND error_code = ANY(%(codes)s) AND updated_at >= %(since)s AND sender_id IS NOT NULL
        GROUP BY sender_id
    """
    since = now - dt.timedelta(minutes=rule.window_minutes)
    with connection.cursor() as cursor:
        cursor.execute(
            sql, {"lookback": now - LOOKBACK, "codes": codes, "since": since, "outbound": Direction.OUTBOUND}
        )
        counts = {str(sender): float(count) for sender, count in cursor.fetchall()}
    # Throttled answers counted at send time include retries that later went through (their rows
    # no longer carry the code); the larger of the two figures, so one refusal never counts twice.
    for sender, count in observe.senders_throttled_since(since.timestamp(), now.timestamp()).items():
        counts[sender] = max(counts.get(sender, 0.0), float(count))
    return counts


PROBES: dict[str, Callable[[AlertRule, dt.datetime], dict[str, float]]] = {
    AlertKind.SEND_FAILURE_RATE: send_failure_rate,
    AlertKind.QUEUE_DEPTH: queue_depth,
    AlertKind.QUEUE_OLDEST_TASK: queue_oldest_task,
    AlertKind.NO_WORKERS: no_workers,
    AlertKind.BEAT_STALE: beat_stale,
    AlertKind.WEBHOOK_SIGNATURE_FAILURES: webhook_signature_failures,
    AlertKind.RUN_STUCK: run_stuck,
    AlertKind.SENDER_THROTTLED: sender_throttled,
}
