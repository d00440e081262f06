"""Who gets a campaign's message: the one rule for a launch's snapshot, its dry run and event answers.

Each (contact, campaign) row is decided by SQL compiled here once, in this order; the first
check that holds gives the skip reason:

1. ``opted_out``: the contact's consent is not opted in;
2. ``capped``: the campaign's frequency cap is reached by the contact's recipients (of any
   campaign) planned or sent within its window, plus, for event answers, the answers before
   this one in the same batch (events in order, then campaigns in order) that will be sent;
3. ``missing_variable``: a variable one of the campaign's templates needs has no value and no
   fallback (``event.*`` variables only when answering an event); ``detail`` names them all;
4. ``outside_window``: a free-form WhatsApp text to a contact who has not written in 24 h;
5. ``expired``: the send (at the end of the contact's quiet hours, or now) would come at or
   after the validity's end, counted from the launch or from when the event happened.

Past those, a sender that cannot send the template fails the answer (``sender``; a launch
refuses such a campaign before it snapshots), the control group is skipped ``control``, a
contact waiting for a test's winner, or inside its local quiet hours, is held, and the rest
is pending. ``snapshot_statement`` runs the rule over a campaign's audience (the launch
inserts its rows, the dry run groups them); ``answers_statement`` over a batch of matched
(event, campaign) pairs, walking each contact's answers in order for the cap.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection

from audience.choices import Channel
from audience.models import ConsentStatus
from campaigns.models import Campaign, RecipientState, SkipReason
from campaigns.quiet_hours import quiet_releases
from campaigns.selectors import segment_where
from campaigns.services import arms
from messaging.models import MessageTemplate
from messaging.rendering import CONTACT_FIELDS, content_variable_name, placeholder_names, value_text
from messaging.services.send import WHATSAPP_WINDOW

# Recipients that count against the frequency cap: planned or sent, not skipped or failed.
CAP_STATES = (RecipientState.PENDING, RecipientState.HELD, RecipientState.SENDING, RecipientState.SENT)
SENDER_FAILURE = "sender"  # the reason of an answer failed because its sender cannot send the template

_POSITIONAL = re.compile(r"%%|%s")
_NAMED = re.compile(r"%%|%\((\w+)\)s")


class Params(dict):
    """The named parameters of one statement; each fragment adds its own values under fresh names."""

    def add(self, name: str, value: Any) -> str:
        """``%(name)s`` for the value: the name as given, suffixed when taken by another value."""
        key, number = name, 1
        while key in self and self[key] != value:
            number += 1
            key = f"{name}_{number}"
        self[key] = value
        return f"%({key})s"

    def adopt(self, sql: str, values: Iterable[Any], name: str) -> str:
        """A fragment written with positional ``%s`` (a compiled segment, an arm), its values named."""
        remaining = iter(values)
        return _POSITIONAL.sub(lambda m: m.group(0) if m.group(0) == "%%" else self.add(name, next(remaining)), sql)


@dataclass(frozen=True)
class Statement:
    sql: str
    params: dict[str, Any]

    def positional(self) -> tuple[str, list]:
        """The statement with ``%s`` placeholders and its values in order, for callers that add their own."""
        values: list = []

        def placeholder(match: re.Match) -> str:
            if match.group(1) is None:
                return match.group(0)
            values.append(self.params[match.group(1)])
            return "%s"

        return _NAMED.sub(placeholder, self.sql), values


@dataclass(frozen=True)
class _Rows:
    """What a rule's rows come from: FROM items that bring ``audience_contact`` in, and how to read them."""

    source: str
    where: str
    keys: str  # select-list columns identifying a row besides the contact ("e.position, ", or "")
    valid_from: str  # the instant the validity counts from
    event: str | None  # the event's properties (jsonb) for ``event.*`` variables; None: no event
    cap_contacts: str | None  # the cap counts only these contacts' recipients (bigint[]); None: everyone's
    zones: Iterable[str] | None  # the time zones among the rows; None: every contact's


def snapshot_statement(campaign: Campaign, now: dt.datetime) -> Statement:
    """SELECT (contact_id, state, reason, detail, release_at, arm) over the campaign's audience at ``now``."""
    params = Params()
    audience = _audience_where(campaign, now, params)
    at = f"{params.add('now', now)}::timestamptz"
    rows = _Rows("audience_contact", audience, "", valid_from=at, event=None, cap_contacts=None, zones=None)
    facts = _facts(campaign, now, rows, params)
    return Statement(_decisions(f"({facts}) f", _capped("f", "0"), "", at, params), params)


def answers_statement(
    pairs: Sequence[tuple[int, int, Campaign]], now: dt.datetime, zones: Iterable[str], sender_errors: dict[int, str]
) -> Statement:
    """SELECT (position, contact_id, state, reason, detail, release_at, arm) for matched pairs.

    ``pairs`` are (event id, contact id, campaign), in the order answers count against the cap
    (events in order, then campaigns); ``position`` is a pair's index. ``zones`` are the time
    zones of the events' contacts, ``sender_errors`` what stops each campaign's sender ('': none).
    """
    params = Params()
    at = f"{params.add('now', now)}::timestamptz"
    by_campaign: dict[int, tuple[Campaign, list[int], list[int]]] = {}
    for position, (event_id, _, campaign) in enumerate(pairs):
        _, positions, event_ids = by_campaign.setdefault(campaign.pk, (campaign, [], []))
        positions.append(position)
        event_ids.append(event_id)
    contacts = f"{params.add('contacts', sorted({contact_id for _, contact_id, _ in pairs}))}::bigint[]"
    blocks = []
    for campaign, positions, event_ids in by_campaign.values():
        source = f"""unnest({params.add("positions", positions)}::int[], {params.add("events", event_ids)}::bigint[])
                AS e (position, event_id)
            JOIN campaigns_event ev ON ev.id = e.event_id
            JOIN audience_contact ON audience_contact.id = ev.contact_id"""
        valid_from = f"LEAST(ev.occurred_at, {at})"
        rows = _Rows(source, "true", "e.position, ", valid_from, "ev.properties", contacts, zones)
        blocks.append(_facts(campaign, now, rows, params, sender_errors.get(campaign.pk, "")))
    # Each contact's answers in order: whether the cap is reached depends on how many earlier
    # ones will be sent, which depends on whether they reached it.
    counted = params.add("counted", [RecipientState.PENDING, RecipientState.HELD])
    step = _capped("r", "w.sent")
    walk = f"""
        WITH RECURSIVE facts AS MATERIALIZED ({" UNION ALL ".join(blocks)}),
        ranked AS MATERIALIZED (
            SELECT facts.*, row_number() OVER (PARTITION BY facts.contact_id ORDER BY facts.position) AS nth
            FROM facts
        ),
        walk (contact_id, nth, capped, sent) AS (
            SELECT DISTINCT ranked.contact_id, 0::bigint, false, 0 FROM ranked
            UNION ALL
            SELECT r.contact_id, r.nth, {step},
                   w.sent + ({_state("r", _reason("r", step, at, params), params)} = ANY({counted}))::int
            FROM walk w JOIN ranked r ON r.contact_id = w.contact_id AND r.nth = w.nth + 1
        )"""
    rows_sql = "ranked f JOIN walk w ON w.contact_id = f.contact_id AND w.nth = f.nth"
    return Statement(walk + _decisions(rows_sql, "w.capped", "d.position, ", at, params), params)


# --- The checks ------------------------------------------------------------------------------


def _facts(campaign: Campaign, now: dt.datetime, rows: _Rows, params: Params, sender_error: str = "") -> str:
    """One row per contact (and event) with what the decision reads, computed once each."""
    variants = list(campaign.variants.select_related("template").order_by("id"))
    templates = arms.campaign_templates(campaign, variants)
    plan = arms.arm_plan(campaign, variants)
    arm = arms.arm_sql(campaign, variants=variants)
    expression = params.adopt(arm.expression, arm.params, "arm")
    arm_join = params.adopt(arm.join, arm.join_params, "arm")
    expires_at = "NULL::timestamptz"
    if campaign.validity:
        expires_at = f"{rows.valid_from} + {params.add('validity', campaign.validity)}::interval"
    cap = campaign.frequency_cap if campaign.frequency_cap and campaign.frequency_window else None
    return f"""
        SELECT {rows.keys}audience_contact.id AS contact_id,
               audience_contact.consent_status <> {params.add("opted_in", ConsentStatus.OPTED_IN)} AS opted_out,
               COALESCE(k.n, 0) AS recent,
               {params.add("cap", cap)}::int AS cap,
               {_missing(templates, rows.event, params)} AS missing,
               {_outside_window(campaign, templates, now, params)} AS outside_window,
               q.release_at,
               {expires_at} AS expires_at,
               {expression} AS arm,
               {"true" if plan is not None and plan.waits_for_winner else "false"} AS waits_for_winner,
               {params.add("sender_error", sender_error)}::text AS sender_error
        FROM {rows.source}
        {quiet_join(campaign, now, params, rows.zones)}
        {_cap_join(campaign, now, rows.cap_contacts, params)}
        {arm_join}
        WHERE {rows.where}"""


def _capped(row: str, earlier: str) -> str:
    """The cap is reached by the contact's recent recipients plus ``earlier`` answers of the batch."""
    return f"({row}.cap IS NOT NULL AND {row}.recent + {earlier} >= {row}.cap)"


def _reason(row: str, capped: str, at: str, params: Params) -> str:
    """The skip reason of a row of facts, NULL when it passes every check."""
    return f"""CASE
            WHEN {row}.opted_out THEN {params.add("opted_out", SkipReason.OPTED_OUT)}
            WHEN {capped} THEN {params.add("capped", SkipReason.CAPPED)}
            WHEN {row}.missing IS NOT NULL THEN {params.add("missing_variable", SkipReason.MISSING_VARIABLE)}
            WHEN {row}.outside_window THEN {params.add("outside_window", SkipReason.OUTSIDE_WINDOW)}
            WHEN {row}.expires_at IS NOT NULL AND COALESCE({row}.release_at, {at}) >= {row}.expires_at
                THEN {params.add("expired", SkipReason.EXPIRED)}
        END"""


def _state(row: str, reason: str, params: Params) -> str:
    control = params.add("control_arm", arms.CONTROL_ARM)
    return f"""CASE
            WHEN ({reason}) IS NOT NULL THEN {params.add("skipped", RecipientState.SKIPPED)}
            WHEN {row}.sender_error <> '' THEN {params.add("failed", RecipientState.FAILED)}
            WHEN {row}.arm = {control} THEN {params.add("skipped", RecipientState.SKIPPED)}
            WHEN ({row}.waits_for_winner AND {row}.arm IS NULL) OR {row}.release_at IS NOT NULL
                THEN {params.add("held", RecipientState.HELD)}
            ELSE {params.add("pending", RecipientState.PENDING)}
        END"""


def _decisions(rows: str, capped: str, keys: str, at: str, params: Params) -> str:
    """SELECT keys, contact_id, state, reason, detail, release_at, arm from facts ``rows`` (aliased f)."""
    sender_failure = params.add("sender_failure", SENDER_FAILURE)
    held = params.add("held", RecipientState.HELD)
    return f"""
        SELECT {keys}d.contact_id, d.state,
               CASE WHEN d.reason IS NOT NULL THEN d.reason
                    WHEN d.state = {params.add("failed", RecipientState.FAILED)} THEN {sender_failure}
                    WHEN d.state = {params.add("skipped", RecipientState.SKIPPED)}
                        THEN {params.add("control", SkipReason.CONTROL)}
                    ELSE '' END AS reason,
               CASE WHEN d.reason = {params.add("missing_variable", SkipReason.MISSING_VARIABLE)}
                        THEN left('missing variable ' || d.missing, 255)
                    WHEN d.reason IS NULL AND d.state = {params.add("failed", RecipientState.FAILED)}
                        THEN left(d.sender_error, 255)
                    ELSE '' END AS detail,
               CASE WHEN d.state = {held} AND NOT (d.waits_for_winner AND d.arm IS NULL) THEN d.release_at
                    END AS release_at,
               d.arm
        FROM (
            SELECT s.*, {_state("s", "s.reason", params)} AS state
            FROM (SELECT f.*, {_reason("f", capped, at, params)} AS reason FROM {rows}) s
        ) d"""


def _audience_where(campaign: Campaign, now: dt.datetime, params: Params) -> str:
    """WHERE over audience_contact: the segment (or every opted-in contact) and the topic."""
    if campaign.segment is not None:
        sql, values = segment_where(campaign.segment, now=now)
        clauses = [f"({params.adopt(sql, values, 'segment')})"]
    else:
        clauses = [f"audience_contact.consent_status = {params.add('opted_in', ConsentStatus.OPTED_IN)}"]
    if campaign.topic_id:
        clauses.append(
            "EXISTS (SELECT 1 FROM audience_contacttopic ct"
            f" WHERE ct.contact_id = audience_contact.id AND ct.topic_id = {params.add('topic', campaign.topic_id)})"
        )
    return " AND ".join(clauses)


def quiet_join(campaign: Campaign, now: dt.datetime, params: Params, zones: Iterable[str] | None = None) -> str:
    """LEFT JOIN q(tz, release_at) over audience_contact: the time zones now in quiet hours and when they end.

    Worked out once per distinct time zone in Python (zoneinfo knows DST), never once per contact;
    ``zones`` are those to work out, every contact's when None.
    """
    empty = "LEFT JOIN (SELECT NULL::text AS tz, NULL::timestamptz AS release_at WHERE false) q ON false"
    if campaign.quiet_start is None or campaign.quiet_end is None:
        return empty
    if zones is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT timezone FROM audience_contact WHERE timezone <> ''")
            zones = [row[0] for row in cursor.fetchall()]
    names = {zone for zone in zones if zone} | {settings.DEFAULT_TIMEZONE}
    releases = quiet_releases(now, sorted(names), campaign.quiet_start, campaign.quiet_end)
    if not releases:
        return empty
    default = params.add("default_zone", settings.DEFAULT_TIMEZONE)
    return f"""LEFT JOIN unnest({params.add("quiet_zones", list(releases))}::text[],
                              {params.add("quiet_ends", list(releases.values()))}::timestamptz[]) AS q (tz, release_at)
            ON q.tz = COALESCE(NULLIF(audience_contact.timezone, ''), {default})"""


def _cap_join(campaign: Campaign, now: dt.datetime, contacts: str | None, params: Params) -> str:
    """LEFT JOIN k(contact_id, n): the contacts' recipients that count against the cap within its window.

    A launch decides each contact once, so only the contacts already at the cap are joined; event
    answers add their batch's earlier answers, so every count of the batch's contacts is.
    """
    if not campaign.frequency_cap or not campaign.frequency_window:
        return "LEFT JOIN (SELECT NULL::bigint AS contact_id, 0 AS n WHERE false) k ON false"
    only = f" AND r.contact_id = ANY({contacts})" if contacts else ""
    floor = 1 if contacts else campaign.frequency_cap
    return f"""LEFT JOIN (
            SELECT r.contact_id, count(*) AS n FROM campaigns_recipient r
            WHERE r.state = ANY({params.add("cap_states", list(CAP_STATES))})
              AND r.created_at > {params.add("cap_since", now - campaign.frequency_window)}{only}
            GROUP BY r.contact_id HAVING count(*) >= {params.add("cap_floor", floor)}
        ) k ON k.contact_id = audience_contact.id"""


def template_required_names(template: MessageTemplate, *, with_event: bool) -> list[str]:
    """The variables the template needs and has no usable fallback for; ``event.*`` only ``with_event``."""
    if template.content_sid:
        names = [content_variable_name(value) for value in (template.content_variables or {}).values()]
    else:
        names = placeholder_names(template.body)
    fallbacks = template.fallbacks or {}
    return [
        name
        for name in dict.fromkeys(names)
        if value_text(fallbacks.get(name)) is None and (with_event or not name.startswith("event."))
    ]


def _missing(templates: list[MessageTemplate], event: str | None, params: Params) -> str:
    """The variables the row lacks (', ' between them), or NULL; the rendering's rule.

    A value is missing when absent, null or blank; numbers, booleans and objects never are. The
    templates of every arm count for every contact, so no arm loses contacts another keeps.
    """
    names = [name for template in templates for name in template_required_names(template, with_event=bool(event))]
    tests = []
    for name in dict.fromkeys(names):
        namespace, _, key = name.partition(".")
        if namespace == "attributes":
            value = f"audience_contact.attributes ->> {params.add('attribute', key)}"
        elif namespace == "event" and event:
            value = f"{event} ->> {params.add('property', key)}"
        elif name in CONTACT_FIELDS:
            value = f"audience_contact.{name}"
        else:
            continue
        tests.append(f"CASE WHEN btrim(COALESCE({value}, '')) = '' THEN {params.add('variable', name)} END")
    if not tests:
        return "NULL::text"
    return f"NULLIF(concat_ws(', ', {', '.join(tests)}), '')"


def _outside_window(campaign: Campaign, templates: list[MessageTemplate], now: dt.datetime, params: Params) -> str:
    """Free-form WhatsApp text may only go to contacts who wrote within the last 24 h (as the send checks)."""
    free_form = any(not template.content_sid for template in templates)
    if campaign.sender.channel != Channel.WHATSAPP or not free_form:
        return "false"
    since = params.add("window_start", now - WHATSAPP_WINDOW)
    return f"(audience_contact.last_inbound_at IS NULL OR audience_contact.last_inbound_at <= {since})"
