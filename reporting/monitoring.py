"""Reads for live monitoring: the inbound stream and the system dashboard."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache
from django.db import connection, models
from django.db.models import Count, Max, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from kombu.exceptions import ChannelError

from audience.models import ConsentStatus, Contact
from campaigns.models import CampaignRun, RunStatus
from config.health import check_cache, check_database
from messaging.keywords import KEYWORDS, Keyword, keyword_parse
from messaging.models import Direction, Message, MessageEvent
from reporting.counters import counters_read

FULL_PHONE_PERMISSION = "reporting.see_full_phone"
WORKERS_CACHE_KEY = "reporting:celery-workers"
WORKERS_CACHE_SECONDS = 10
PING_TIMEOUT = 0.5
RATE_WINDOWS = {"1m": 1, "5m": 5, "60m": 60}
# Outbound messages are sent within minutes of being created; older ones are left out of the rates
# so the rate query stays on the (direction, created_at) index.
RATE_LOOKBACK = dt.timedelta(days=2)


class InboundKind(models.TextChoices):
    OPT_OUT = "opt_out", "Opt-out keyword"
    OPT_IN = "opt_in", "Opt-in keyword"
    HELP = "help", "Help keyword"
    MEDIA = "media", "Media"
    REPLY = "reply", "Reply"


KIND_OF_KEYWORD = {
    Keyword.STOP: InboundKind.OPT_OUT,
    Keyword.START: InboundKind.OPT_IN,
    Keyword.HELP: InboundKind.HELP,
}


# --- Phones --------------------------------------------------------------------------------


def can_see_full_phones(user) -> bool:
    return bool(user and user.is_authenticated and user.has_perm(FULL_PHONE_PERMISSION))


def phone_mask(value: str | None) -> str:
    """+254712345678 -> +2547******78; a channel prefix (whatsapp:) is kept."""
    if not value:
        return value or ""
    prefix, _, number = value.rpartition(":")
    prefix = f"{prefix}:" if prefix else ""
    keep_head = 5 if number.startswith("+") else 4
    if len(number) <= keep_head + 2:
        return prefix + "*" * len(number)
    return prefix + number[:keep_head] + "*" * (len(number) - keep_head - 2) + number[-2:]


def phone_shown(value: str | None, full: bool) -> str:
    return (value or "") if full else phone_mask(value)


# --- Inbound stream ------------------------------------------------------------------------


def inbound_kind(body: str | None, num_media: int) -> tuple[str, str]:
    """(kind, the keyword as written or "") by messaging.keywords, media before plain replies."""
    found = keyword_parse(body)
    if found:
        return KIND_OF_KEYWORD[found[0]].value, found[1]
    return (InboundKind.MEDIA if num_media else InboundKind.REPLY).value, ""


def _kind_sql() -> RawSQL:
    """The same classification in SQL, so a kind filter pages correctly."""
    word = "upper(btrim(rtrim(btrim(\"messaging_message\".\"body\", E' \\t\\r\\n'), '.!'), E' \\t\\r\\n'))"
    words = {
        kind: sorted(w for w, k in KEYWORDS.items() if KIND_OF_KEYWORD[k] == kind) for kind in KIND_OF_KEYWORD.values()
    }
    cases = " ".join(f"WHEN {word} = ANY(%s) THEN '{kind.value}'" for kind in words)
    sql = f"CASE {cases} WHEN \"messaging_message\".\"num_media\" > 0 THEN 'media' ELSE 'reply' END"
    return RawSQL(sql, tuple(words.values()))


def inbound_list(
    *,
    since_id: int | None = None,
    since_at: dt.datetime | None = None,
    channel: str | None = None,
    kind: str | None = None,
    contact: int | None = None,
    sender: int | None = None,
    limit: int = 100,
) -> list[Message]:
    """Inbound messages, oldest first: those after the cursor, or the latest ``limit`` without one."""
    queryset: QuerySet[Message] = Message.objects.filter(direction=Direction.INBOUND)
    exact = {"channel": channel, "contact_id": contact, "sender_id": sender}
    queryset = queryset.filter(**{name: value for name, value in exact.items() if value is not None})
    if kind is not None:
        queryset = queryset.annotate(kind=_kind_sql()).filter(kind=kind)
    if since_id is not None:
        return list(queryset.filter(pk__gt=since_id).order_by("pk")[:limit])
    if since_at is not None:
        return list(queryset.filter(created_at__gt=since_at).order_by("created_at", "pk")[:limit])
    return list(reversed(queryset.order_by("-pk")[:limit]))


# --- Dashboard -----------------------------------------------------------------------------


def _timed(check: Callable[[], Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        value = check()
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency means "down", with its reason
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    if isinstance(value, dict):
        result.update(value)
    return result


def celery_workers() -> list[str]:
    """Names of the workers that answered a ping (cached briefly: a ping waits its whole timeout)."""
    names = cache.get(WORKERS_CACHE_KEY)
    if names is None:
        from config.celery import app

        replies = app.control.ping(timeout=PING_TIMEOUT) or []
        names = sorted(name for reply in replies for name in reply)
        cache.set(WORKERS_CACHE_KEY, names, WORKERS_CACHE_SECONDS)
    return names


def queue_depths(names: list[str] | None = None) -> dict[str, int]:
    """Messages waiting in each Celery queue (LLEN on Redis, through kombu so any broker answers)."""
    from config.celery import app

    names = sorted(names or {app.conf.task_default_queue, *(app.conf.task_queues or {})})
    depths = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        channel = conn.default_channel
        for name in names:
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except ChannelError:  # Redis keeps no key for an empty queue
                depths[name] = 0
    return depths


def beat_last_tick() -> dict[str, Any]:
    last = PeriodicTask.objects.aggregate(last=Max("last_run_at"))["last"]
    ago = (timezone.now() - last).total_seconds() if last else None
    return {"last_run_at": last, "seconds_ago": round(ago, 1) if ago is not None else None}


def send_rates(now: dt.datetime) -> dict[str, Any]:
    """Messages accepted by the provider and failed in the last 1, 5 and 60 minutes, and the error rate."""
    accepted_at = "COALESCE(queued_at, sent_at)"
    parts, params = [], {"now": now, "lookback": now - RATE_LOOKBACK}
    for label, minutes in RATE_WINDOWS.items():
        params[f"w{label}"] = now - dt.timedelta(minutes=minutes)
        parts.append(f"count(*) FILTER (WHERE {accepted_at} >= %(w{label})s)")
        parts.append(f"count(*) FILTER (WHERE failed_at >= %(w{label})s)")
    sql = f"""
        SELECT {", ".join(parts)} FROM messaging_message
        WHERE direction = 'outbound' AND created_at >= %(lookback)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    rates = {}
    for index, (label, minutes) in enumerate(RATE_WINDOWS.items()):
        sent, failed = row[2 * index], row[2 * index + 1]
        rates[label] = {
            "sent": sent,
            "failed": failed,
            "per_minute": round(sent / minutes, 2),
            "error_rate": round(failed / (sent + failed), 4) if sent + failed else None,
        }
    return rates


def webhook_lag(now: dt.datetime) -> dict[str, Any]:
    """Time since the last provider event, and the callbacks' delay behind the carrier's own time.

    Twilio's status callbacks carry a time only as RawDlrDoneDate (YYMMDDhhmm, when the carrier
    reported); when recent events have it, their median delay is given too.
    """
    last = MessageEvent.objects.order_by("-received_at").values_list("received_at", flat=True).first()
    sql = """
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM received_at - CASE
            WHEN payload->>'RawDlrDoneDate' ~ '^[0-9]{10}$'
            THEN to_timestamp(payload->>'RawDlrDoneDate', 'YYMMDDHH24MI') END)), count(*)
        FROM messaging_messageevent
        WHERE kind = 'status' AND received_at >= %(since)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"since": now - dt.timedelta(minutes=5)})
        median, recent = cursor.fetchone()
    return {
        "last_event_at": last,
        "seconds_since_last_event": round((now - last).total_seconds(), 1) if last else None,
        "status_events_5m": recent,
        "carrier_delay_p50_seconds": round(float(median), 1) if median is not None else None,
    }


def active_runs() -> list[dict[str, Any]]:
    runs = list(
        CampaignRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED])
        .select_related("campaign")
        .order_by("started_at", "pk")[:50]
    )
    counts = counters_read([run.pk for run in runs])
    by_run: dict[int, dict[str, int]] = {run.pk: {} for run in runs}
    for (run_id, status, _code, _unit), (count, _total, _priced) in counts.items():
        by_run[run_id][status] = by_run[run_id].get(status, 0) + count
    result = []
    for run in runs:
        done = run.sent + run.skipped + run.failed
        result.append(
            {
                "id": run.pk,
                "campaign": run.campaign_id,
                "campaign_name": run.campaign.name,
                "status": run.status,
                "started_at": run.started_at,
                "total": run.total,
                "pending": run.pending,
                "held": run.held,
                "sent": run.sent,
                "skipped": run.skipped,
                "failed": run.failed,
                "progress": round(done / run.total, 4) if run.total else None,
                "messages_by_status": by_run[run.pk],
            }
        )
    return result


def totals(now: dt.datetime) -> dict[str, int]:
    contacts = Contact.objects.aggregate(
        contacts=Count("id"), opted_out=Count("id", filter=Q(consent_status=ConsentStatus.OPTED_OUT))
    )
    day = Message.objects.filter(created_at__gte=now - dt.timedelta(hours=24)).aggregate(
        outbound=Count("id", filter=Q(direction=Direction.OUTBOUND)),
        inbound=Count("id", filter=Q(direction=Direction.INBOUND)),
    )
    return {
        "contacts": contacts["contacts"],
        "opted_out_contacts": contacts["opted_out"],
        "messages_24h": day["outbound"] + day["inbound"],
        "outbound_24h": day["outbound"],
        "inbound_24h": day["inbound"],
    }


def dashboard() -> dict[str, Any]:
    now = timezone.now()
    workers = _timed(lambda: {"workers": celery_workers()})
    if workers["ok"]:
        workers["alive"] = bool(workers["workers"])
    queues = _timed(lambda: {"depths": queue_depths()})
    return {
        "at": now,
        "database": _timed(check_database),
        "redis": _timed(check_cache),
        "broker": queues,
        "celery": workers,
        "beat": beat_last_tick(),
        "send_rate": send_rates(now),
        "webhooks": webhook_lag(now),
        "active_runs": active_runs(),
        "totals": totals(now),
    }
