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
        self.runs = _open_runs(sorted(self.campaigns))  # {campaign id: (run id, status)}
        self.rows = self._decide()

    def write(self) -> None:
        decided_for = {pk: run_id for pk, (run_id, _) in self.runs.items()}
        self.runs = self._runs_locked()  # as locked: their status decides whether dispatchers start
        if {pk: run_id for pk, (run_id, _) in self.runs.items()} != decided_for:
            self.rows = self._decide()
        for pk, answers in self.rows.items():
            _run_answers_insert(self.campaigns[pk], *self.runs[pk], answers)

    def _runs_locked(self) -> dict[int, tuple[int, str]]:
        """The open runs, locked: those read when deciding, if still open; else each campaign's looked up again."""
        locked = _runs_lock(sorted(run_id for run_id, _ in self.runs.values()))
        runs = {pk: (run_id, locked[run_id]) for pk, (run_id, _) in self.runs.items() if locked.get(run_id) in _OPEN}
        if len(runs) == len(self.campaigns):
            return runs
        runs = {}  # a run closed meanwhile, or a campaign had none
        for pk in sorted(self.campaigns):
            run = trigger_run(self.campaigns[pk], lock=True)
            if run is None:
                logger.warning("triggered campaign %s has no open run; its events are not answered", pk)
            else:
                runs[pk] = (run.pk, run.status)
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


_OPEN = (RunStatus.RUNNING, RunStatus.PAUSED)


def _open_runs(campaign_ids: list[int]) -> dict[int, tuple[int, str]]:
    """{campaign id: (run id, status)} of the campaigns' open runs as trigger_run finds them, in one query."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT DISTINCT ON (campaign_id) campaign_id, id, status FROM campaigns_campaignrun
               WHERE campaign_id = ANY(%s) AND status = ANY(%s)
               ORDER BY campaign_id, started_at DESC, id DESC""",
            [campaign_ids, [status.value for status in _OPEN]],
        )
        return {campaign_id: (run_id, status) for campaign_id, run_id, status in cursor.fetchall()}


def _runs_lock(run_ids: list[int]) -> dict[int, str]:
    """Lock the runs (in id order, as every matcher does: no deadlock); {run id: status} as locked."""
    if not run_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, status FROM campaigns_campaignrun WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [run_ids]
        )
        return dict(cursor.fetchall())


def _sender_error(campaign: Campaign) -> str:
    try:
        create_service.sender_for_template(campaign.template, campaign.sender)
    except create_service.MessageRequestError as exc:
        return "; ".join(exc.messages)[:255]
    return ""


def _run_answers_insert(
    campaign: Campaign, run_id: int, status: str, answers: list[tuple[Recipient, ClaimedEvent]]
) -> None:
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
    sql.fetch(f"INSERT INTO campaigns_recipient (run_id, {names}) SELECT %s, {names} FROM {source}", [run_id, *arrays])
    _counters_add(run_id, Counter((recipient.state, recipient.reason) for recipient in recipients))
    arms.answers_sizes_add(run_id, recipients)
    if status == RunStatus.RUNNING and any(recipient.state == RecipientState.PENDING for recipient in recipients):
        dispatch.dispatch_start(run_id, chains=1)  # after commit


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
