"""Evaluating alert rules, recording each transition once, and delivering it once.

A rule's state per subject moves ok -> firing when its probe's value breaches the threshold,
and firing -> ok when the value has been clear (at or past the clear threshold: hysteresis) for
``clear_after_minutes`` (a hold: no flapping). Each move is a conditional UPDATE on the state
row and the ``AlertNotice`` is written in the same transaction only when the UPDATE moved it,
so two evaluators running at once record one alert. Delivery is a task enqueued after commit;
each channel (email, webhook) is claimed on the notice row before sending, so a re-run task or
two workers send it once.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import smtplib
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial

from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.utils import timezone

from campaigns.models import CampaignRun
from messaging.models import Sender
from reporting.alerting.models import AlertKind, AlertNotice, AlertRule, AlertState
from reporting.alerting.probes import PROBES

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 5.0
UNITS = {
    AlertKind.SEND_FAILURE_RATE: "failure rate",
    AlertKind.QUEUE_DEPTH: "tasks waiting",
    AlertKind.QUEUE_OLDEST_TASK: "minutes, oldest task",
    AlertKind.NO_WORKERS: "workers answering",
    AlertKind.BEAT_STALE: "minutes since beat's last tick",
    AlertKind.WEBHOOK_SIGNATURE_FAILURES: "refused webhooks",
    AlertKind.RUN_STUCK: "minutes without progress",
    AlertKind.SENDER_THROTTLED: "throttled messages",
}


# --- Evaluation ----------------------------------------------------------------------------


def alerts_evaluate(now: dt.datetime | None = None, *, deliver_inline: bool = False) -> list[int]:
    """Evaluate every enabled rule; returns the ids of the notices recorded.

    Events are delivered by a Celery task after commit, or in this process after commit with
    ``deliver_inline`` (the watchdog command: when no worker runs, no task would deliver them).
    """
    now = now or timezone.now()
    deliver = _notify_inline if deliver_inline else _notify_enqueue
    notices: list[int] = []
    for rule in AlertRule.objects.filter(enabled=True):
        try:
            values = PROBES[rule.kind](rule, now)
        except Exception as exc:  # noqa: BLE001 - a probe that cannot answer (broker down) skips one round
            logger.warning("alert rule %s could not be evaluated: %s: %s", rule.name, type(exc).__name__, exc)
            continue
        notices.extend(rule_evaluate(rule, values, now, deliver=deliver))
    return notices


def rule_evaluate(
    rule: AlertRule, values: dict[str, float], now: dt.datetime, deliver: Callable[[int], None] | None = None
) -> list[int]:
    """Move the rule's state for every subject measured, and for every firing one not measured."""
    firing = set(AlertState.objects.filter(rule=rule, firing=True).values_list("subject", flat=True))
    notices = []
    for subject in sorted(set(values) | firing):
        notice = state_step(rule, subject, values.get(subject), now, deliver=deliver)
        if notice is not None:
            notices.append(notice.pk)
    return notices


def _state(rule: AlertRule, subject: str) -> AlertState:
    try:
        with transaction.atomic():
            return AlertState.objects.get_or_create(rule=rule, subject=subject)[0]
    except IntegrityError:  # another evaluator created it between our get and create
        return AlertState.objects.get(rule=rule, subject=subject)


def state_step(
    rule: AlertRule,
    subject: str,
    value: float | None,
    now: dt.datetime,
    deliver: Callable[[int], None] | None = None,
) -> AlertNotice | None:
    """One step of one subject's state; returns the notice recorded, if this call made the move."""
    state = _state(rule, subject)
    rows = AlertState.objects.filter(pk=state.pk)
    if not state.firing:
        if rule.breaches(value):
            return _transition(rule, state, value, now, AlertNotice.Kind.FIRED, deliver=deliver)
        rows.update(value=value, evaluated_at=now)
        return None
    if not rule.clears(value):
        rows.filter(firing=True).update(value=value, clear_since=None, evaluated_at=now)
        return None
    clear_since = state.clear_since or now
    if state.clear_since is None:
        rows.filter(firing=True, clear_since__isnull=True).update(clear_since=now, value=value, evaluated_at=now)
    if now - clear_since >= dt.timedelta(minutes=rule.clear_after_minutes):
        return _transition(rule, state, value, now, AlertNotice.Kind.CLEARED, clear_since=clear_since, deliver=deliver)
    return None


def _transition(
    rule: AlertRule,
    state: AlertState,
    value: float | None,
    now: dt.datetime,
    kind: AlertNotice.Kind,
    clear_since: dt.datetime | None = None,
    deliver: Callable[[int], None] | None = None,
) -> AlertNotice | None:
    fired = kind == AlertNotice.Kind.FIRED
    rows = AlertState.objects.filter(pk=state.pk, firing=not fired)
    if fired:
        changes = {"firing": True, "fired_at": now, "clear_since": None}
    else:
        rows = rows.filter(clear_since=clear_since)  # a breach in between reset the hold: not ours to clear
        changes = {"firing": False, "cleared_at": now, "clear_since": None}
    with transaction.atomic():
        if not rows.update(value=value, evaluated_at=now, **changes):
            return None  # another evaluator moved it first
        notice = AlertNotice.objects.create(
            rule=rule, subject=state.subject, kind=kind, value=value, text=alert_text(rule, state.subject, kind, value)
        )
        transaction.on_commit(partial(deliver or _notify_enqueue, notice.pk))
    (logger.warning if fired else logger.info)("%s", notice.text)
    return notice


def _notify_enqueue(notice_id: int) -> None:
    from reporting.alerting.tasks import alert_notify  # the tasks import these services: a cycle at module level

    alert_notify.delay(notice_id)


def _notify_inline(notice_id: int) -> None:
    try:
        alert_notice_notify(notice_id)
    except NotifyFailed as exc:  # the next alert_notify task or evaluation cannot retry it: say so
        logger.error("alert notice %s not delivered: %s", notice_id, exc)


def subject_label(rule: AlertRule, subject: str) -> str:
    if not subject:
        return "platform"
    if rule.kind == AlertKind.SENDER_THROTTLED:
        name = Sender.objects.filter(pk=subject).values_list("name", flat=True).first()
        return f"sender {subject} ({name})" if name else f"sender {subject}"
    if rule.kind == AlertKind.RUN_STUCK:
        run = CampaignRun.objects.filter(pk=subject).select_related("campaign").first()
        return f"run {subject} of campaign {run.campaign.name!r}" if run else f"run {subject}"
    return f"queue {subject}"


def alert_text(rule: AlertRule, subject: str, kind: str, value: float | None) -> str:
    shown = "n/a" if value is None else f"{value:.4g}"
    if kind == AlertNotice.Kind.FIRED:
        side = "below" if rule.breaches(-float("inf")) else "above"
        return (
            f"[ALERT] {rule.name} on {subject_label(rule, subject)}: {shown} {UNITS[rule.kind]}, "
            f"{side} the threshold {rule.threshold:g}"
        )
    return f"[RESOLVED] {rule.name} on {subject_label(rule, subject)}: {shown} {UNITS[rule.kind]}"


# --- Delivery ------------------------------------------------------------------------------


class NotifyFailed(Exception):
    """A channel could not be reached; the task retries the channels still unsent."""


def alert_notice_notify(notice_id: int) -> None:
    """Email the admins and POST to ALERT_WEBHOOK_URL, each at most once per notice."""
    notice = AlertNotice.objects.select_related("rule").filter(pk=notice_id).first()
    if notice is None:
        return
    failures = []
    if settings.ADMINS and _claim(notice_id, "emailed_at"):
        try:
            mail_admins(notice.text[:150], _email_body(notice), fail_silently=False)
        except (smtplib.SMTPException, OSError) as exc:
            _unclaim(notice_id, "emailed_at")
            failures.append(f"email: {exc}")
    if settings.ALERT_WEBHOOK_URL and _claim(notice_id, "posted_at"):
        try:
            _post(settings.ALERT_WEBHOOK_URL, _webhook_payload(notice))
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # e.g. a garbled answer
            _unclaim(notice_id, "posted_at")
            failures.append(f"webhook: {exc}")
    if failures:
        raise NotifyFailed("; ".join(failures))


def _claim(notice_id: int, field: str) -> bool:
    unsent = AlertNotice.objects.filter(pk=notice_id, **{f"{field}__isnull": True})
    return bool(unsent.update(**{field: timezone.now()}))


def _unclaim(notice_id: int, field: str) -> None:
    AlertNotice.objects.filter(pk=notice_id).update(**{field: None})


def _email_body(notice: AlertNotice) -> str:
    rule = notice.rule
    return (
        f"{notice.text}\n\nRule: {rule.name} ({rule.get_kind_display()})\n"
        f"Threshold: {rule.threshold:g}; window {rule.window_minutes} min; "
        f"clears after {rule.clear_after_minutes} min clear\n"
        f"At: {notice.created_at.isoformat()}\nNotice: {notice.pk}\n"
    )


def _webhook_payload(notice: AlertNotice) -> dict:
    # Slack's incoming webhooks read "text"; the rest lets other receivers deduplicate and route.
    return {
        "text": notice.text,
        "event_id": notice.pk,  # the key receivers already read
        "kind": notice.kind,
        "rule": notice.rule.name,
        "subject": notice.subject,
        "value": notice.value,
        "at": notice.created_at.isoformat(),
    }


def _post(url: str, payload: dict) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "messaging-platform-alerts"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310 - configured URL
        response.read()
