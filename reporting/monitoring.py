"""Reads for live monitoring: the inbound stream and the system dashboard."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache
from django.db import connection, models
from django.db.models import Max, QuerySet, Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from kombu.exceptions import ChannelError
from redis.exceptions import RedisError

from campaigns.models import CampaignRun, RunStatus
from config.celery import app
from config.health import check_cache, check_database
from messaging.keywords import KEYWORDS, Keyword, keyword_parse, keyword_text_sql
from messaging.models import Direction, Message, ProviderCallback
from reporting.alerting.selectors import alerts_summary
from reporting.contact_totals import contact_totals
from reporting.counters import SWEEP_WATERMARK_KEY, counters_read
from reporting.models import MinuteCounter

WORKERS_CACHE_KEY = "reporting:celery-workers"
QUEUES_CACHE_KEY = "reporting:queue-depths"
# Beat refreshes the probes every 10 s; a request probes itself only when they are older than this.
PROBE_CACHE_SECONDS = 60
PING_TIMEOUT = 0.5
RATE_WINDOWS = {"1m": 1, "5m": 5, "60m": 60}


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


# --- Inbound stream ------------------------------------------------------------------------


def inbound_kind(body: str | None, num_media: int) -> tuple[str, str]:
    """(kind, the keyword as written or "") by messaging.keywords, media before plain replies."""
    found = keyword_parse(body)
    if found:
        return KIND_OF_KEYWORD[found[0]].value, found[1]
    return (InboundKind.MEDIA if num_media else InboundKind.REPLY).value, ""


def _kind_sql() -> RawSQL:
    """The same classification in SQL, so a kind filter pages correctly."""
    word = keyword_text_sql('"messaging_message"."body"')
    words = {
        kind: sorted(w for w, k in KEYWORDS.items() if KIND_OF_KEYWORD[k] == kind) for kind in KIND_OF_KEYWORD.values()
    }
    cases = " ".join(f"WHEN {word} = ANY(%s) THEN %s" for _ in words)
    sql = f'CASE {cases} WHEN "messaging_message"."num_media" > 0 THEN %s ELSE %s END'
    params = [value for kind, kind_words in words.items() for value in (kind_words, kind.value)]
    return RawSQL(sql, (*params, InboundKind.MEDIA.value, InboundKind.REPLY.value))


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


def _probe_cached(key: str, probe: Callable[[], Any], *, refresh: bool = False) -> tuple[Any, float]:
    """(value, its age in seconds) of a slow probe, kept in Redis by ``monitoring_refresh`` (beat).

    A request never waits for a probe while a value younger than ``PROBE_CACHE_SECONDS`` is kept;
    only when beat has not refreshed it for that long does one request probe (and store) it.
    """
    found = None if refresh else cache.get(key)
    if found is None:
        found = {"value": probe(), "at": time.time()}
        cache.set(key, found, PROBE_CACHE_SECONDS)
    return found["value"], round(max(time.time() - found["at"], 0.0), 1)


def _probe_answer(name: str, key: str, probe: Callable[[], Any]) -> dict[str, Any]:
    value, age = _probe_cached(key, probe)
    return {name: value, "age_seconds": age}


def _ping_workers() -> list[str]:
    replies = app.control.ping(timeout=PING_TIMEOUT) or []
    return sorted(name for reply in replies for name in reply)


def celery_workers() -> list[str]:
    """Names of the workers that answered a ping (cached: a ping waits its whole timeout)."""
    return _probe_cached(WORKERS_CACHE_KEY, _ping_workers)[0]


def _queue_depths_read(names: list[str] | None = None) -> dict[str, int]:
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


def queue_depths(names: list[str] | None = None) -> dict[str, int]:
    """Messages waiting in each Celery queue (LLEN on Redis, through kombu so any broker answers), read now."""
    return _queue_depths_read(names)


def monitoring_refresh() -> None:
    """Probe the workers and the queues and keep the answers for the dashboard (beat, every 10 s)."""
    for key, probe in ((WORKERS_CACHE_KEY, _ping_workers), (QUEUES_CACHE_KEY, _queue_depths_read)):
        try:
            _probe_cached(key, probe, refresh=True)
        except Exception:  # noqa: BLE001 - a broker that is down is reported by the next request's probe
            cache.delete(key)


def beat_last_tick() -> dict[str, Any]:
    last = PeriodicTask.objects.aggregate(last=Max("last_run_at"))["last"]
    ago = (timezone.now() - last).total_seconds() if last else None
    return {"last_run_at": last, "seconds_ago": round(ago, 1) if ago is not None else None}


def _minute_sums(since: dt.datetime) -> dict[str, int]:
    sums = MinuteCounter.objects.filter(minute__gte=since).aggregate(
        outbound=Sum("outbound"), inbound=Sum("inbound"), accepted=Sum("accepted"), failed=Sum("failed")
    )
    return {name: value or 0 for name, value in sums.items()}


def send_rates(now: dt.datetime) -> dict[str, Any]:
    """Messages accepted by the provider and failed in the current minute and the N whole minutes before it.

    Read from the per-minute counters (``reporting.counters``): ``since`` is where the window starts,
    and ``per_minute`` divides by the window's true length (N minutes plus the current one's part).
    """
    this_minute = now.replace(second=0, microsecond=0)
    rates = {}
    for label, minutes in RATE_WINDOWS.items():
        since = this_minute - dt.timedelta(minutes=minutes)
        sums = _minute_sums(since)
        sent, failed = sums["accepted"], sums["failed"]
        span = (now - since).total_seconds() / 60
        rates[label] = {
            "sent": sent,
            "failed": failed,
            "per_minute": round(sent / span, 2),
            "error_rate": round(failed / (sent + failed), 4) if sent + failed else None,
            "since": since,
        }
    return rates


def send_rate_series(now: dt.datetime, minutes: int) -> dict[str, list]:
    """Outbound messages accepted by the provider and failed, per minute, over the last ``minutes``.

    From the same per-minute counters as ``send_rates``, so the chart and the figures beside it agree.
    """
    end = now.replace(second=0, microsecond=0)
    start = end - dt.timedelta(minutes=minutes - 1)
    counted = {
        minute: (accepted, failed)
        for minute, accepted, failed in MinuteCounter.objects.filter(minute__gte=start, minute__lte=end).values_list(
            "minute", "accepted", "failed"
        )
    }
    times = [start + dt.timedelta(minutes=i) for i in range(minutes)]
    return {
        "x": [t.isoformat() for t in times],
        "sent": [counted.get(t, (0, 0))[0] for t in times],
        "failed": [counted.get(t, (0, 0))[1] for t in times],
    }


def webhook_lag(now: dt.datetime) -> dict[str, Any]:
    """Time since the last provider event, and the callbacks' delay behind the carrier's own time.

    Twilio's status callbacks carry a time only as RawDlrDoneDate (YYMMDDhhmm, when the carrier
    reported); when recent events have it, their median delay is given too.
    """
    last = ProviderCallback.objects.order_by("-received_at").values_list("received_at", flat=True).first()
    sql = """
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM received_at - CASE
            WHEN payload->>'RawDlrDoneDate' ~ '^[0-9]{10}$'
            THEN to_timestamp(payload->>'RawDlrDoneDate', 'YYMMDDHH24MI') END)), count(*)
        FROM messaging_providercallback
        WHERE kind = %(status)s AND received_at >= %(since)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"since": now - dt.timedelta(minutes=5), "status": ProviderCallback.Kind.STATUS})
        median, recent = cursor.fetchone()
    return {
        "last_event_at": last,
        "seconds_since_last_event": round((now - last).total_seconds(), 1) if last else None,
        "status_callbacks_5m": recent,
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
        done = run.sent + run.skipped + run.failed + run.unknown
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
                "unknown": run.unknown,
                "progress": round(done / run.total, 4) if run.total else None,
                "messages_by_status": by_run[run.pk],
            }
        )
    return result


def totals(now: dt.datetime) -> dict[str, int]:
    """Contacts (exact, trigger-kept totals) and messages created since the minute 24 h ago (per-minute counters)."""
    contacts, opted_out = contact_totals()
    day = _minute_sums((now - dt.timedelta(hours=24)).replace(second=0, microsecond=0))
    return {
        "contacts": contacts,
        "opted_out_contacts": opted_out,
        "messages_24h": day["outbound"] + day["inbound"],
        "outbound_24h": day["outbound"],
        "inbound_24h": day["inbound"],
    }


DASHBOARD_ALERTS = 10  # the latest alerts and recoveries the dashboard shows


DEPENDENCIES = ("database", "redis", "broker", "celery")


def dashboard(*, details: bool = True) -> dict[str, Any]:
    """How the platform is. Without ``details`` (anyone but Staff) a dependency that is down says
    only that: its error text names hosts, ports and database roles, as /health/ keeps them."""
    board = _dashboard()
    if not details:
        for name in DEPENDENCIES:
            if "error" in board[name]:
                board[name] = {**board[name], "error": "down"}
    return board


def _swept_at():
    """When the counters were last swept; unknown while Redis is down (the board says Redis is)."""
    try:
        return cache.get(SWEEP_WATERMARK_KEY)
    except RedisError:
        return None


def _dashboard() -> dict[str, Any]:
    now = timezone.now()
    workers = _timed(lambda: _probe_answer("workers", WORKERS_CACHE_KEY, _ping_workers))
    if workers["ok"]:
        workers["alive"] = bool(workers["workers"])
    queues = _timed(lambda: _probe_answer("depths", QUEUES_CACHE_KEY, _queue_depths_read))
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
        "counters_swept_at": _swept_at(),
        "alerts": alerts_summary(limit=DASHBOARD_ALERTS),
    }
