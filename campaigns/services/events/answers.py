"""Answering matches: one recipient per (event, campaign) in the campaign's run, decided by the eligibility rule."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import Counter
from typing import TYPE_CHECKING

from django.contrib.contenttypes.models import ContentType
from django.db import connection

from campaigns.models import Campaign, CampaignRun, Recipient, RecipientState, RunStatus
from campaigns.services import arms, dispatch, eligibility
from config import sql
from messaging.services import create as create_service

if TYPE_CHECKING:
    from campaigns.services.events.matching import ClaimedEvent

logger = logging.getLogger(__name__)


# --- Answering: recipients in the campaigns' runs ------------------------------------------


def trigger_run(campaign: Campaign, *, lock: bool = False) -> CampaignRun | None:
    """The open (running or paused) run of a triggered campaign."""
    runs = CampaignRun.objects.filter(campaign=campaign, status__in=[RunStatus.RUNNING, RunStatus.PAUSED])
    if lock:
        runs = runs.select_for_update()
    return runs.order_by("-started_at", "-id").first()


class BatchAnswers:
    """A batch's matches answered in their campaigns' runs: decided first, then written.

    One recipient per match, decided by the launch snapshot's rule in event order, then campaign
    order, as if the events had come one at a time: an earlier answer to a contact counts
    against the frequency cap of a later one. ``zones`` holds the time zone of each of the
    events' contacts, locked by the caller (so no other matcher answers them meanwhile).

    Deciding reads the open runs without locking them, so another matcher writes its answers
    meanwhile; ``write`` locks each run row first, so a cancel either sees these recipients (and
    skips them) or comes after. Runs that closed or opened in between are decided again.
    """

    def __init__(self, pairs: list[tuple[ClaimedEvent, Campaign]], zones: dict[int, str], *, now: dt.datetime):
        self.pairs, self.zones, self.now = pairs, zones, now
        self.campaigns = {campaign.pk: campaign for _, campaign in pairs}
        self.runs = self._open_runs(lock=False)
        self.rows = self._decide()

    def write(self) -> None:
        decided_for = {pk: run.pk for pk, run in self.runs.items()}
        self.runs = self._open_runs(lock=True)  # as locked: their status decides whether dispatchers start
        if {pk: run.pk for pk, run in self.runs.items()} != decided_for:
            self.rows = self._decide()
        for pk, answers in self.rows.items():
            _run_answers_insert(self.campaigns[pk], self.runs[pk], answers)

    def _open_runs(self, *, lock: bool) -> dict[int, CampaignRun]:
        runs: dict[int, CampaignRun] = {}
        for pk in sorted(self.campaigns):  # locked in one order by every matcher: no deadlock
            run = trigger_run(self.campaigns[pk], lock=lock)
            if run is not None:
                runs[pk] = run
            elif lock:
                logger.warning("triggered campaign %s has no open run; its events are not answered", pk)
        return runs

    def _decide(self) -> dict[int, list[tuple[Recipient, ClaimedEvent]]]:
        """Each run's new recipients (not saved), with the events they answer."""
        # A contact deleted since its event was stored took its events along: nothing to answer.
        pairs = [
            (event, campaign)
            for event, campaign in self.pairs
            if campaign.pk in self.runs and event.contact_id in self.zones
        ]
        if not pairs:
            return {}
        statement = eligibility.answers_statement(
            [(event.pk, event.contact_id, campaign) for event, campaign in pairs],
            self.now,
            zones={self.zones[event.contact_id] for event, _ in pairs},
            sender_errors={pk: _sender_error(campaign) for pk, campaign in self.campaigns.items()},
        )
        with connection.cursor() as cursor:
            cursor.execute(statement.sql, statement.params)
            decisions = cursor.fetchall()
        rows: dict[int, list[tuple[Recipient, ClaimedEvent]]] = {}
        for position, contact_id, state, reason, detail, release_at, arm in sorted(decisions):
            event, campaign = pairs[position]
            recipient = Recipient(
                contact_id=contact_id,
                event_id=event.pk,
                arm=arm,
                state=state,
                reason=reason,
                detail=detail,
                release_at=release_at,
            )
            rows.setdefault(campaign.pk, []).append((recipient, event))
        return rows


def _sender_error(campaign: Campaign) -> str:
    try:
        create_service.sender_for_template(campaign.template, campaign.sender)
    except create_service.MessageRequestError as exc:
        return "; ".join(exc.messages)[:255]
    return ""


def _run_answers_insert(campaign: Campaign, run: CampaignRun, answers: list[tuple[Recipient, ClaimedEvent]]) -> None:
    """Insert a run's new recipients, their pending messages (one INSERT each) and its counters (one UPDATE).

    The recipients' ids are drawn first, so their messages (which name them as their source) are
    created before them and each recipient is inserted with its message: no second write of it.
    """
    recipients = [recipient for recipient, _ in answers]
    ids = sql.fetch("SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [_recipient_sequence(), len(answers)])
    for recipient, (pk,) in zip(recipients, ids, strict=True):
        recipient.pk = pk
    waiting = (RecipientState.PENDING, RecipientState.HELD)
    sending = [(recipient, event) for recipient, event in answers if recipient.state in waiting]
    message_ids = {}
    if sending:
        message_ids = arms.answers_messages_create(campaign, sending, ContentType.objects.get_for_model(Recipient))
    source, arrays = sql.unnest(
        _RECIPIENT_COLUMNS,
        [
            (r.pk, r.contact_id, r.event_id, r.arm, r.state, r.reason, r.detail, r.release_at, message_ids.get(r.pk))
            for r in recipients
        ],
    )
    names = ", ".join(name for name, _ in _RECIPIENT_COLUMNS)
    sql.fetch(f"INSERT INTO campaigns_recipient (run_id, {names}) SELECT %s, {names} FROM {source}", [run.pk, *arrays])
    _counters_add(run.pk, Counter((recipient.state, recipient.reason) for recipient in recipients))
    arms.answers_sizes_add(run.pk, recipients)
    if run.status == RunStatus.RUNNING and any(recipient.state == RecipientState.PENDING for recipient in recipients):
        dispatch.dispatch_start(run.pk, chains=1)  # after commit


_RECIPIENT_COLUMNS = (
    ("id", "bigint"),
    ("contact_id", "bigint"),
    ("event_id", "bigint"),
    ("arm", "bigint"),
    ("state", "text"),
    ("reason", "text"),
    ("detail", "text"),
    ("release_at", "timestamptz"),
    ("message_id", "bigint"),
)


@functools.cache
def _recipient_sequence() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence('campaigns_recipient', 'id')")
        return cursor.fetchone()[0]


def _counters_add(run_id: int, counts: Counter[tuple[str, str]]) -> None:
    """More recipients by (state, reason): total, each state's counter and the skip reasons in one UPDATE."""
    states: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for (state, reason), count in counts.items():
        states[RecipientState(state).value] += count  # each state has its counter column, named alike
        if state == RecipientState.SKIPPED:
            reasons[reason] += count
    if states:
        dispatch.run_counters_move(run_id, {"total": sum(states.values()), **states}, reasons)
