"""``GET /metrics``: the platform in Prometheus' text format.

Every value is right whichever process answers the scrape: gauges are read from PostgreSQL and
Redis at scrape time by a custom collector, and request counters and latency histograms are
summed in Redis by every process (``config.observe``). Access needs ``Authorization: Bearer
<METRICS_TOKEN>`` or a client address in METRICS_ALLOWED_IPS (REMOTE_ADDR, never a forwarded
header): 401 without credentials, 403 with wrong ones.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from audience.models import ImportJob
from campaigns.models import CampaignRun, RunStatus
from config import observe
from config.celery import app
from messaging.models import Direction
from reporting.alerting.models import AlertState
from reporting.alerting.probes import broker_queues

logger = logging.getLogger(__name__)

NAMESPACE = "mp"
SENDS_WINDOW = dt.timedelta(hours=24)
RUN_FIELDS = ("total", "pending", "held", "sending", "sent", "skipped", "failed", "unknown")
IMPORT_FIELDS = ("created", "updated", "unchanged", "skipped", "invalid", "duplicate")


class PlatformCollector:
    """Reads the platform's state at scrape time; one failing source leaves the others."""

    def collect(self) -> Iterator[Metric]:
        for source in (self.requests, self.sends, self.queues, self.runs, self.imports, self.upkeep):
            try:
                yield from source()
            except Exception as exc:  # noqa: BLE001 - a down dependency drops its metrics, not the scrape
                logger.warning("metrics source %s failed: %s: %s", source.__name__, type(exc).__name__, exc)

    # --- Request counters and histograms, summed in Redis ---

    def requests(self) -> Iterator[Metric]:
        for name, (help_text, labels) in observe.COUNTERS.items():
            family = CounterMetricFamily(f"{NAMESPACE}_{name.removesuffix('_total')}", help_text, labels=labels)
            for key, value in sorted(observe.hash_read(name).items()):
                family.add_metric(key.split(observe.LABEL_SEP), float(value))
            yield family
        for name, (help_text, labels) in observe.HISTOGRAMS.items():
            family = HistogramMetricFamily(f"{NAMESPACE}_{name}", help_text, labels=labels)
            for label_values, buckets, total in _histograms(observe.hash_read(name)):
                family.add_metric(label_values, buckets, total)
            yield family

    # --- Gauges from PostgreSQL and the broker ---

    def sends(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_outbound_messages_24h",
            "Outbound messages created in the last 24 hours, by current status and sender.",
            labels=["status", "sender"],
        )
        sql = """
            SELECT m.status, COALESCE(s.name, ''), count(*) FROM messaging_message m
            LEFT JOIN messaging_sender s ON s.id = m.sender_id
            WHERE m.direction = %(outbound)s AND m.created_at >= %(since)s
            GROUP BY 1, 2 ORDER BY 1, 2
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, {"outbound": Direction.OUTBOUND, "since": timezone.now() - SENDS_WINDOW})
            for status, sender, count in cursor.fetchall():
                family.add_metric([status, sender], count)
        yield family

    def queues(self) -> Iterator[Metric]:
        names = sorted({app.conf.task_default_queue, *(app.conf.task_queues or {})})
        queues = broker_queues(names)
        depth = GaugeMetricFamily(f"{NAMESPACE}_queue_depth", "Tasks waiting in a Celery queue.", labels=["queue"])
        age = GaugeMetricFamily(
            f"{NAMESPACE}_queue_oldest_task_age_seconds",
            "Age of the oldest task waiting in a Celery queue (0 when empty).",
            labels=["queue"],
        )
        for name, queue in queues.items():
            depth.add_metric([name], queue["depth"])
            age.add_metric([name], queue["oldest_age_seconds"] or 0)
        yield depth
        yield age

    def runs(self) -> Iterator[Metric]:
        recipients = GaugeMetricFamily(
            f"{NAMESPACE}_run_recipients",
            "Recipients of each running or paused campaign run, by state.",
            labels=["run", "campaign", "state"],
        )
        progress = GaugeMetricFamily(
            f"{NAMESPACE}_run_progress_ratio",
            "Share of a running or paused run's recipients that are sent, skipped, failed or of unknown outcome.",
            labels=["run", "campaign"],
        )
        runs = CampaignRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED]).order_by("pk")
        for run in runs.only("pk", "campaign_id", *RUN_FIELDS):
            ids = [str(run.pk), str(run.campaign_id)]
            for field in RUN_FIELDS:
                recipients.add_metric([*ids, field], getattr(run, field))
            done = run.sent + run.skipped + run.failed + run.unknown
            progress.add_metric(ids, done / run.total if run.total else 0)
        yield recipients
        yield progress

    def imports(self) -> Iterator[Metric]:
        sums = ImportJob.objects.aggregate(**{field: Sum(f"{field}_count") for field in IMPORT_FIELDS})
        rows = CounterMetricFamily(
            f"{NAMESPACE}_import_rows", "Contact import rows, by outcome, over every import job.", labels=["outcome"]
        )
        for field in IMPORT_FIELDS:
            rows.add_metric([field], sums[field] or 0)
        yield rows
        jobs = GaugeMetricFamily(f"{NAMESPACE}_import_jobs", "Import jobs by status.", labels=["status"])
        for row in ImportJob.objects.order_by("status").values("status").annotate(n=Count("id")):
            jobs.add_metric([row["status"]], row["n"])
        yield jobs

    def upkeep(self) -> Iterator[Metric]:
        last = PeriodicTask.objects.aggregate(last=Max("last_run_at"))["last"]
        beat = GaugeMetricFamily(
            f"{NAMESPACE}_beat_last_tick_timestamp_seconds", "When celery-beat last sent a task (Unix time)."
        )
        beat.add_metric([], last.timestamp() if last else 0)
        yield beat
        firing = GaugeMetricFamily(f"{NAMESPACE}_alerts_firing", "Alerts firing now, by rule.", labels=["rule", "kind"])
        rows = AlertState.objects.filter(firing=True).values("rule__name", "rule__kind").annotate(n=Count("id"))
        for row in rows.order_by("rule__name"):
            firing.add_metric([row["rule__name"], row["rule__kind"]], row["n"])
        yield firing


def _histograms(fields: dict[str, str]) -> Iterator[tuple[list[str], list[tuple[str, float]], float]]:
    """Redis fields (per-bucket counts, sum, count) into cumulative Prometheus buckets."""
    series: dict[str, dict[str, float]] = {}
    for field, value in fields.items():
        labels, _, part = field.rpartition(observe.PART_SEP)
        series.setdefault(labels, {})[part] = float(value)
    bounds = [*(repr(float(b)) for b in observe.LATENCY_BUCKETS), "+Inf"]
    for labels in sorted(series):
        parts = series[labels]
        cumulative, buckets = 0.0, []
        for index, bound in enumerate(bounds):
            cumulative += parts.get(str(index), 0.0)
            buckets.append((bound, cumulative))
        yield labels.split(observe.LABEL_SEP), buckets, parts.get("sum", 0.0)


registry = CollectorRegistry(auto_describe=False)
registry.register(PlatformCollector())


# --- The view --------------------------------------------------------------------------------


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for allowed in settings.METRICS_ALLOWED_IPS:
        try:
            if ip in ipaddress.ip_network(allowed, strict=False):
                return True
        except ValueError:
            logger.error("METRICS_ALLOWED_IPS has an invalid entry %r", allowed)
    return False


def metrics_access(request: HttpRequest) -> int:
    """200, or the refusal's status: 401 without credentials, 403 with wrong ones."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, token = header.partition(" ")
        expected = settings.METRICS_TOKEN
        if scheme.lower() == "bearer" and expected and hmac.compare_digest(token.strip().encode(), expected.encode()):
            return 200
        return 403
    if _address_allowed(request.META.get("REMOTE_ADDR", "")):
        return 200
    return 401


def metrics_view(request: HttpRequest) -> HttpResponse:
    status = metrics_access(request)
    if status == 401:
        response = HttpResponse("Authorization: Bearer <METRICS_TOKEN> required\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if status == 403:
        return HttpResponse("Forbidden\n", status=403)
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
