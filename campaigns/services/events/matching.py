"""Matching events to triggered campaigns: a batch at a time in the workers, or one event in the request.

Workers claim pending events from their queue, PendingEvent (FOR UPDATE SKIP LOCKED, so
matchers never share one), match the batch against the running triggered campaigns with a few
statements per campaign, and mark the events matched in the same transaction. A crash rolls
all of it back and leaves the events pending for the next matcher; a committed batch is never
claimed again. (event, campaign) is unique in the matched-campaigns table and (event, run)
among recipients: the database refuses a second answer even to a matcher that got it wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from audience import services as audience_services
from audience.models import Contact
from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStatus,
    Event,
    EventStatus,
)
from campaigns.segments import rules
from campaigns.segments.compile import compile_rule
from campaigns.segments.rules import RuleError
from campaigns.services.events.answers import BatchAnswers
from campaigns.services.events.conditions import conditions_hold
from campaigns.services.events.kick import helper_wake
from campaigns.services.events.triggers import keyword_normalize
from config import idempotency
from messaging.keywords import KEYWORDS
from messaging.models import Direction, Message

logger = logging.getLogger(__name__)


KEYWORD_EVENT = "keyword"  # the name of events recorded for inbound keywords


KEYWORD_RE = re.compile(r"^[A-Z0-9]{1,32}$")


# --- Recording events one at a time (answered before returning) ------------------------------


def event_replay(idempotency_key: str, request_hash: str) -> Event | None:
    """The event first recorded with this key, or None; IdempotencyConflict if the request differs."""
    event = Event.objects.filter(idempotency_key=idempotency_key).first()
    if event is not None:
        idempotency.replay_check(event.request_hash, request_hash, f"event {event.pk}")
    return event


def event_record(
    *,
    contact: Contact,
    name: str,
    properties: dict[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
    idempotency_key: str,
    request_hash: str = "",
    keyword: str = "",
    now: dt.datetime | None = None,
    replay_checked: bool = False,
) -> tuple[Event, bool]:
    """Store an event and match it before returning; returns (event, created). A replayed key returns the first event.

    The same matcher as the workers' (``events_match``), over this one event, in the
    transaction that stores it: the caller sees the campaigns it fired. ``replay_checked``: the
    caller has just called ``event_replay`` for the key (the unique key still decides a race).
    """
    existing = None if replay_checked else event_replay(idempotency_key, request_hash)
    if existing is not None:
        return existing, False
    now = now or timezone.now()
    event = Event(
        contact=contact,
        name=name,
        properties=properties or {},
        occurred_at=occurred_at or now,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        status=EventStatus.PENDING,
    )
    with transaction.atomic():
        try:
            with transaction.atomic():
                event.save()
        except IntegrityError:  # the same key sent concurrently: that request's event stands
            replayed = event_replay(idempotency_key, request_hash)
            if replayed is None:
                raise
            return replayed, False
        events_match([event.pk], keyword=keyword, now=now)
    event.status, event.matched_at = EventStatus.MATCHED, now
    return event, True


MATCH_BATCH = 1000


def events_match(
    event_ids: list[int] | None = None,
    *,
    limit: int = MATCH_BATCH,
    keyword: str = "",
    now: dt.datetime | None = None,
) -> list[int]:
    """Match pending events (these ids, else the oldest ``limit``); returns the ids this call matched.

    Events another matcher holds are skipped, not waited for.
    """
    now = now or timezone.now()
    with transaction.atomic():
        batch = _claim(event_ids, limit)
        if not batch:
            return []
        answers = _batch_answer(batch, keyword=keyword, now=now)
        # Marked once the answers are decided and before they lock the runs: under a run's lock
        # it would hold another matcher back as long, and done first it would keep a replay of
        # these events (an insert on their keys) waiting for the whole batch.
        ids = [event.pk for event in batch]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE campaigns_event SET status = %s, matched_at = %s WHERE id = ANY(%s::bigint[])",
                [EventStatus.MATCHED.value, now, _id_array(ids)],
            )
        if answers is not None:
            answers.write()
    return ids


def _claim(event_ids: list[int] | None, limit: int) -> list[ClaimedEvent]:
    """Lock pending events for this transaction and take them off the queue; skips those held elsewhere.

    From the queue, the oldest ``limit`` of its rows no other matcher holds; then their events,
    skipping any another matcher holds (its queue row stays, and is deleted by whoever meets it
    next once that event is matched). A queue row whose event is matched or gone is deleted.
    Locks on an event's row are FOR NO KEY UPDATE: they wait for no foreign key check.
    """
    with connection.cursor() as cursor:
        if event_ids is None:
            cursor.execute(
                "SELECT event_id FROM campaigns_pendingevent ORDER BY event_id LIMIT %s FOR UPDATE SKIP LOCKED",
                [limit],
            )
            queued = [row[0] for row in cursor.fetchall()]
            if not queued:
                return []
        else:
            queued = list(event_ids)
        cursor.execute(
            """SELECT id, contact_id, name, properties, status FROM campaigns_event
               WHERE id = ANY(%s::bigint[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED""",
            [_id_array(queued)],
        )
        rows = cursor.fetchall()
        held = set(queued).difference(row[0] for row in rows)  # locked elsewhere, or gone
        if held and event_ids is None:
            cursor.execute("SELECT id FROM campaigns_event WHERE id = ANY(%s::bigint[])", [_id_array(held)])
            held = {row[0] for row in cursor.fetchall()}
        done = [pk for pk in queued if pk not in held]
        if done:
            cursor.execute("DELETE FROM campaigns_pendingevent WHERE event_id = ANY(%s::bigint[])", [_id_array(done)])
    return [ClaimedEvent(*row[:4]) for row in rows if row[4] == EventStatus.PENDING]


class ClaimedEvent:
    """A pending event as a matcher holds it: what matching reads, without a model instance each."""

    __slots__ = ("pk", "contact_id", "name", "properties")

    def __init__(self, pk, contact_id, name, properties):
        self.pk, self.contact_id, self.name = pk, contact_id, name
        self.properties = properties if isinstance(properties, dict) else json.loads(properties or "{}")


def _id_array(ids) -> str:
    """Ids as one array literal: psycopg quotes one string far faster than a list of thousands."""
    return "{" + ",".join(str(int(pk)) for pk in ids) + "}"


def events_match_pending(
    *, limit: int = MATCH_BATCH, seconds: float = 20.0, wake_helper: bool = True
) -> tuple[int, bool]:
    """Match batch after batch until none is left or ``seconds`` passed; (matched, more may be left)."""
    deadline = time.monotonic() + seconds
    total = 0
    while True:
        matched = len(events_match(limit=limit))
        total += matched
        if matched < limit:
            return total, False
        if wake_helper:
            helper_wake()  # a backlog: a second matcher shares it
        if time.monotonic() >= deadline:
            return total, True


def _batch_answer(batch: list[ClaimedEvent], *, keyword: str, now: dt.datetime) -> BatchAnswers | None:
    """Every (event, campaign) match of the batch, decided as one event after another would be; None: none."""
    live = Campaign.objects.filter(kind=CampaignKind.TRIGGERED, status=CampaignStatus.RUNNING)
    if keyword:
        live = live.filter(trigger_keyword=keyword)
    else:
        live = live.filter(trigger_event__in={event.name for event in batch})
    campaigns = list(live.select_related("template", "sender", "segment", "topic").order_by("pk"))
    # Name and property conditions: Python over the batch, no query.
    candidates = {
        campaign.pk: [
            event
            for event in batch
            if event.contact_id is not None
            and (keyword or event.name == campaign.trigger_event)
            and conditions_hold(campaign.trigger_conditions, event.properties)
        ]
        for campaign in campaigns
    }
    campaigns = [campaign for campaign in campaigns if candidates[campaign.pk]]
    if not campaigns:
        return None
    contact_ids = sorted({event.contact_id for events in candidates.values() for event in events})
    # One batch at a time per contact (ids in order, so two matchers never deadlock): the
    # frequency cap counts what an earlier batch queued.
    zones = dict(
        Contact.objects.select_for_update(no_key=True)
        .filter(pk__in=contact_ids)
        .order_by("pk")
        .values_list("pk", "timezone")
    )
    allowed: dict[int, set[int]] = {}
    for campaign in campaigns:
        ids = sorted({event.contact_id for event in candidates[campaign.pk]})
        if keyword and campaign.topic_id:  # the keyword asked for the topic, so its condition holds
            audience_services.contacts_add_topic(ids, campaign.topic)
        allowed[campaign.pk] = _contacts_matching(campaign, ids, now=now)
    candidate_ids = {pk: {event.pk for event in events} for pk, events in candidates.items()}
    pairs = [
        (event, campaign)
        for event in batch
        for campaign in campaigns
        if event.pk in candidate_ids[campaign.pk] and event.contact_id in allowed[campaign.pk]
    ]
    pairs = _matches_claim(pairs)
    if not pairs:
        return None
    return BatchAnswers(pairs, zones, now=now)


def _contacts_matching(campaign: Campaign, contact_ids: list[int], *, now: dt.datetime) -> set[int]:
    """Those of the contacts the campaign's contact rule, segment and topic hold for (one query, or none)."""
    conditions = Q()
    try:
        if campaign.trigger_contact_rule:
            conditions &= compile_rule(rules.validate(campaign.trigger_contact_rule), now=now)
        if campaign.segment_id:
            conditions &= compile_rule(rules.validate(campaign.segment.definition), now=now)
    except RuleError as exc:  # stored before a rule change made it invalid: never "everyone"
        logger.warning("campaign %s: contact rule no longer valid, not matched: %s", campaign.pk, exc)
        return set()
    if campaign.topic_id:
        conditions &= Q(topics__pk=campaign.topic_id)
    if not conditions:
        return set(contact_ids)
    return set(Contact.objects.filter(conditions, pk__in=contact_ids).values_list("pk", flat=True).distinct())


def _matches_claim(pairs: list[tuple[ClaimedEvent, Campaign]]) -> list[tuple[ClaimedEvent, Campaign]]:
    """Record the (event, campaign) matches; returns those not recorded before (the unique pair decides)."""
    if not pairs:
        return []
    table = Event.matched_campaigns.through._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {table} (event_id, campaign_id)
                SELECT * FROM unnest(%s::bigint[], %s::bigint[])
                ON CONFLICT (event_id, campaign_id) DO NOTHING
                RETURNING event_id, campaign_id""",
            [[event.pk for event, _ in pairs], [campaign.pk for _, campaign in pairs]],
        )
        fresh = set(cursor.fetchall())
    return [(event, campaign) for event, campaign in pairs if (event.pk, campaign.pk) in fresh]


# --- Inbound keywords ----------------------------------------------------------------------


def keyword_trigger(message_id: int, keyword: str | None = None) -> Event | None:
    """Answer an inbound message that is a campaign's keyword; STOP, START and HELP never are.

    Called by the inbound_message_received receiver after the message committed. The message's
    sid is the event's idempotency key, so the same inbound message never answers twice.
    """
    if keyword:  # a consent or help keyword: messaging has handled it
        return None
    message = Message.objects.select_related("contact").filter(pk=message_id, direction=Direction.INBOUND).first()
    if message is None or message.contact is None:
        return None
    word = keyword_normalize(message.body)
    if not KEYWORD_RE.match(word) or word in KEYWORDS:
        return None
    live = Campaign.objects.filter(kind=CampaignKind.TRIGGERED, status=CampaignStatus.RUNNING, trigger_keyword=word)
    if not live.exists():
        return None
    event, _ = event_record(
        contact=message.contact,
        name=KEYWORD_EVENT,
        properties={"keyword": word},
        occurred_at=message.received_at or message.created_at,
        idempotency_key=f"inbound:{message.provider_sid or message.pk}",
        keyword=word,
    )
    return event
