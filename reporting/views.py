"""Pages for analysts and staff: dashboard, live monitoring and campaign analytics.

Every figure comes from the reporting selectors (``reporting.selectors``, ``reporting.monitoring``)
or from the small read-only queries below. The pages poll partials with htmx; charts are drawn by
``reporting/static/reporting/charts.js`` from JSON in data attributes (the ``chart_json`` filter;
no inline code, so the pages run under a strict Content-Security-Policy).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin, UserPassesTestMixin
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.views.generic import TemplateView

from audience.models import ConsentEvent, ConsentStatus
from campaigns.models import Campaign, CampaignRun, RunStatus
from campaigns.services.lifecycle import skip_reason_label
from config import privacy
from config.roles import is_analyst, is_staff_member
from messaging.models import Direction, Message, MessageStatus
from messaging.providers import error_meaning
from reporting import monitoring, selectors
from reporting.cost import cost_rows
from reporting.counters import counters_read
from reporting.outcomes import run_outcomes
from reporting.views_arms import experiment_context

DAY = dt.timedelta(hours=24)
RATE_MINUTES = 60
INBOUND_SHOWN = 50
FAILURES_SHOWN = 25
RUNS_COMPARED = 20
CAMPAIGNS_PER_PAGE = 50


class ReportingPage(LoginRequiredMixin, UserPassesTestMixin, TemplateView):
    """Signed-in Staff and Analysts only; anonymous visitors go to the login page, others get 403."""

    nav = ""

    def test_func(self) -> bool:
        return is_analyst(self.request.user)

    def get_context_data(self, **kwargs) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "nav": self.nav, "is_staff_member": self._staff()}

    def _staff(self) -> bool:
        return is_staff_member(self.request.user)


# --- Reads only these pages need -----------------------------------------------------------


def kpis_last_day(now: dt.datetime) -> dict[str, Any]:
    """Outbound outcomes, inbound messages and opt-outs of the last 24 hours."""
    since = now - DAY
    outbound = Message.objects.filter(direction=Direction.OUTBOUND, created_at__gte=since).aggregate(
        created=Count("id"),
        sent=Count("id", filter=Q(status__in=selectors.REACHED_CARRIER)),
        delivered=Count("id", filter=Q(status__in=selectors.DELIVERED)),
        read=Count("id", filter=Q(status=MessageStatus.READ)),
        failed=Count("id", filter=Q(status__in=selectors.FAILED_WITH_CODE)),
    )
    inbound = Message.objects.filter(direction=Direction.INBOUND, created_at__gte=since).count()
    opt_outs = ConsentEvent.objects.filter(to_status=ConsentStatus.OPTED_OUT, created_at__gte=since).count()
    sent = outbound["sent"]
    return {
        **outbound,
        "inbound": inbound,
        "opt_outs": opt_outs,
        "delivery_rate": round(100 * outbound["delivered"] / sent, 1) if sent else None,
    }


def health_strip(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Database, Redis, workers and beat as (name, ok, detail) for the health strip."""
    beat_ago = board["beat"]["seconds_ago"]
    workers = board["celery"].get("workers") or []
    return [
        _check("Database", board["database"]["ok"], _ms_or_error(board["database"])),
        _check("Redis", board["redis"]["ok"], _ms_or_error(board["redis"])),
        _check(
            "Workers",
            bool(board["celery"]["ok"] and workers),
            f"{len(workers)} answering" if board["celery"]["ok"] else board["celery"].get("error", ""),
        ),
        _check(
            "Beat",
            beat_ago is not None and beat_ago < 180,
            f"last tick {beat_ago:.0f} s ago" if beat_ago is not None else "never ticked",
        ),
    ]


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def _ms_or_error(check: dict[str, Any]) -> str:
    return f"{check['ms']} ms" if check["ok"] else check.get("error", "down")


def recent_failures(now: dt.datetime, *, full_phones: bool) -> dict[str, Any]:
    """Failed and undelivered outbound messages of the last 24 hours: by error code, and the latest ones."""
    failed = Message.objects.filter(
        direction=Direction.OUTBOUND, status__in=selectors.FAILED_WITH_CODE, created_at__gte=now - DAY
    )
    by_code = [
        {"code": row["error_code"], "meaning": error_meaning(row["error_code"]), "count": row["n"]}
        for row in failed.order_by().values("error_code").annotate(n=Count("id")).order_by("-n", "error_code")
    ]
    latest = list(
        failed.order_by("-failed_at", "-id").only(
            "id", "to_address", "channel", "status", "error_code", "error_message", "failed_at", "created_at"
        )[:FAILURES_SHOWN]
    )
    for message in latest:
        message.meaning = error_meaning(message.error_code)
        message.masked_to = privacy.phone_shown(message.to_address, full_phones)
    return {"by_code": by_code, "latest": latest}


def inbound_rows(messages: list[Message], full_phones: bool) -> list[dict[str, Any]]:
    rows = []
    for message in messages:
        kind, keyword = monitoring.inbound_kind(message.body, message.num_media)
        rows.append(
            {
                "id": message.pk,
                "at": message.created_at,
                "channel": message.channel,
                "from": privacy.phone_shown(message.from_address, full_phones),
                "body": privacy.shown("text", message.body, full_phones),
                "kind": kind,
                "kind_label": monitoring.InboundKind(kind).label,
                "keyword": keyword,
            }
        )
    return rows


def run_comparison(campaign: Campaign) -> list[dict[str, Any]]:
    """The campaign's latest runs side by side, from the run rows and the kept message counters."""
    runs = list(CampaignRun.objects.filter(campaign=campaign).order_by("-scheduled_for", "-pk")[:RUNS_COMPARED])
    by_run: dict[int, dict[str, int]] = {run.pk: {} for run in runs}
    for (run_id, status, _code, _unit), (count, _total, _priced) in counters_read(list(by_run)).items():
        by_run[run_id][status] = by_run[run_id].get(status, 0) + count
    outcomes = run_outcomes(list(by_run))
    rows = []
    for run in runs:
        statuses = by_run[run.pk]
        sent = sum(statuses.get(s, 0) for s in selectors.REACHED_CARRIER)
        delivered = sum(statuses.get(s, 0) for s in selectors.DELIVERED)
        rows.append(
            {
                "run": run,
                "targeted": run.total - run.skipped,
                "sent": sent,
                "delivered": delivered,
                "read": statuses.get(MessageStatus.READ, 0),
                "failed": sum(statuses.get(s, 0) for s in selectors.FAILED_WITH_CODE),
                "skipped": run.skipped,
                "delivery_rate": round(100 * delivered / sent, 1) if sent else None,
                **outcomes[run.pk],
                "click_rate": round(100 * outcomes[run.pk]["clicks_unique"] / sent, 1) if sent else None,
            }
        )
    return rows


# --- Pages ---------------------------------------------------------------------------------


class DashboardPage(ReportingPage):
    template_name = "reporting/dashboard.html"
    nav = "dashboard"

    def get_template_names(self) -> list[str]:
        if self.request.headers.get("HX-Request") == "true":
            return ["reporting/partials/dashboard_body.html"]
        return [self.template_name]

    def get_context_data(self, **kwargs) -> dict[str, Any]:
        board = monitoring.dashboard(details=is_staff_member(self.request.user))
        now = board["at"]
        rates = monitoring.send_rate_series(now, RATE_MINUTES)
        return {
            **super().get_context_data(**kwargs),
            "board": board,
            "at": now,
            "health": health_strip(board),
            "kpis": kpis_last_day(now),
            "rates": rates,
            "rate_rows": [(x[11:16], sent, failed) for x, sent, failed in zip(*rates.values(), strict=True)],
            "active_runs": board["active_runs"],
        }


class MonitoringPage(ReportingPage):
    template_name = "reporting/monitoring.html"
    nav = "monitoring"

    def get_context_data(self, **kwargs) -> dict[str, Any]:
        board = monitoring.dashboard(details=is_staff_member(self.request.user))
        messages = monitoring.inbound_list(limit=INBOUND_SHOWN)
        full = privacy.can_see_full_phones(self.request.user)
        return {
            **super().get_context_data(**kwargs),
            "at": board["at"],
            "health": health_strip(board),
            "webhooks": board["webhooks"],
            "inbound": list(reversed(inbound_rows(messages, full))),
            "next_since": messages[-1].pk if messages else 0,
            "failures": recent_failures(board["at"], full_phones=full),
        }


class InboundPartial(ReportingPage):
    """New inbound messages after ``since`` (newest first) and the poller carrying the next cursor."""

    template_name = "reporting/partials/inbound_new.html"

    def get_context_data(self, **kwargs) -> dict[str, Any]:
        try:
            since = max(int(self.request.GET.get("since", "0")), 0)
        except ValueError:
            since = 0
        messages = monitoring.inbound_list(since_id=since, limit=INBOUND_SHOWN)
        full = privacy.can_see_full_phones(self.request.user)
        return {
            **super().get_context_data(**kwargs),
            "inbound": list(reversed(inbound_rows(messages, full))),
            "next_since": messages[-1].pk if messages else since,
        }


class MonitoringStatusPartial(ReportingPage):
    """Health and recent failures, re-rendered by the monitoring page's poll."""

    template_name = "reporting/partials/monitoring_status.html"

    def get_context_data(self, **kwargs) -> dict[str, Any]:
        board = monitoring.dashboard(details=is_staff_member(self.request.user))
        full = privacy.can_see_full_phones(self.request.user)
        return {
            **super().get_context_data(**kwargs),
            "at": board["at"],
            "health": health_strip(board),
            "webhooks": board["webhooks"],
            "failures": recent_failures(board["at"], full_phones=full),
        }


class CampaignListPage(ReportingPage):
    template_name = "reporting/campaign_list.html"
    nav = "campaigns"

    def get_context_data(self, **kwargs) -> dict[str, Any]:
        campaigns = (
            Campaign.objects.select_related("sender", "template")
            .annotate(run_count=Count("runs"))
            .order_by("-updated_at", "-pk")
        )
        page = Paginator(campaigns, CAMPAIGNS_PER_PAGE).get_page(self.request.GET.get("page"))
        return {**super().get_context_data(**kwargs), "page": page}


RECEIPTS_SETTLE = dt.timedelta(hours=1)
MINUTE_BUCKETS_UP_TO = dt.timedelta(hours=3)  # longer campaigns are charted per hour
READ_RECEIPT_CHANNELS = ("whatsapp",)


class CampaignAnalyticsPage(ReportingPage):
    template_name = "reporting/campaign_analytics.html"
    nav = "campaigns"

    def get_context_data(self, **kwargs) -> dict[str, Any]:
        campaign = get_object_or_404(Campaign.objects.select_related("sender", "template"), pk=kwargs["pk"])
        run = self._run(campaign)
        bucket = self.request.GET.get("bucket")
        if bucket not in selectors.BUCKETS:
            bucket = self._bucket_for_span(campaign, run)
        summary = selectors.campaign_summary(campaign, run=run, bucket=bucket)
        messages = summary["messages"]
        # SMS has no read receipts: a read figure there would only ever say 0.
        reads = campaign.sender.channel in READ_RECEIPT_CHANNELS
        funnel = [
            ("Targeted", summary["targeted"]),
            ("Sent", messages["sent"]),
            ("Delivered", messages["delivered"]),
            *((("Read", messages["read"]),) if reads else ()),
            ("Replied", summary["repliers"]),
        ]
        timeline = {
            "bucket_seconds": 60 if bucket == "minute" else 3600,
            "x": [point["at"].isoformat() for point in summary["timeline"]],
            "kinds": ["sent", "delivered", *(["read"] if reads else []), "failed"],
            "y_title": f"Messages per {bucket}",
            **{
                kind: [point[kind] for point in summary["timeline"]] for kind in ("sent", "delivered", "read", "failed")
            },
        }
        return {
            **super().get_context_data(**kwargs),
            "campaign": campaign,
            "run": run,
            "bucket": bucket,
            "summary": summary,
            "funnel": funnel,
            "funnel_chart": {"labels": [name for name, _ in funnel], "values": [value for _, value in funnel]},
            "timeline": timeline,
            "runs": run_comparison(campaign),
            "delivery_percent": _percent(summary["delivery_rate"]),
            "read_percent": _percent(summary["read_rate"]),
            "click_percent": _percent(summary["clicks"]["click_rate"]),
            "conversion_percent": _percent(summary["conversions"]["conversion_rate"]),
            "reads": reads,
            "skipped_by_reason": [(skip_reason_label(reason), n) for reason, n in summary["skipped_by_reason"].items()],
            "live": self._live(campaign, run, messages["in_flight"]),
            "give_up_minutes": settings.DELIVERY_UNKNOWN_GIVE_UP_MINUTES,
            "cost_rows": cost_rows(summary["cost_against_estimate"]),
            **experiment_context(campaign, run),
        }

    @staticmethod
    def _bucket_for_span(campaign: Campaign, run: CampaignRun | None) -> str:
        """Minutes for a campaign that sent within a few hours (a 30-second one is not one dot), else hours."""
        runs = [run] if run else list(campaign.runs.exclude(started_at=None).order_by("started_at"))
        if not runs:
            return "minute"
        end = max((item.finished_at or timezone.now()) for item in runs)
        return "minute" if end - runs[0].started_at <= MINUTE_BUCKETS_UP_TO else "hour"

    @staticmethod
    def _live(campaign: Campaign, run: CampaignRun | None, in_flight: int) -> bool:
        """Whether the figures can still move: a run sending, messages not yet sent, or receipts to come.

        While they can, the page refreshes its figures itself (htmx, every 15 s: see the template).
        Receipts mostly arrive within minutes of the send, so a run counts as live for
        RECEIPTS_SETTLE after it finished.
        """
        runs = CampaignRun.objects.filter(pk=run.pk) if run else campaign.runs.all()
        settling = Q(finished_at__gte=timezone.now() - RECEIPTS_SETTLE)
        moving = Q(status__in=[RunStatus.RUNNING, RunStatus.PAUSED]) | settling
        return in_flight > 0 or runs.filter(moving).exists()

    def _run(self, campaign: Campaign) -> CampaignRun | None:
        value = self.request.GET.get("run")
        if not value:
            return None
        if not value.isdigit():
            raise Http404("no such run")
        return get_object_or_404(CampaignRun, pk=int(value), campaign=campaign)


def _percent(rate: float | None) -> float | None:
    return round(100 * rate, 1) if rate is not None else None
