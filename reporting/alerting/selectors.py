"""Reads of alerting: what is firing now, and the recent history."""

from __future__ import annotations

from django.db.models import QuerySet

from reporting.alerting.models import AlertNotice, AlertState

HISTORY_LIMIT = 50


def alerts_firing() -> QuerySet[AlertState]:
    return AlertState.objects.filter(firing=True).select_related("rule").order_by("fired_at", "pk")


def alert_history(limit: int = HISTORY_LIMIT) -> list[AlertNotice]:
    return list(AlertNotice.objects.select_related("rule").order_by("-created_at", "-pk")[:limit])


def alerts_summary(limit: int = HISTORY_LIMIT) -> dict:
    """The dashboard's view: firing alerts and the latest notices."""
    return {"firing": list(alerts_firing()), "recent": alert_history(limit)}
