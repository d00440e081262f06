"""The recipient snapshot of a campaign run, and the dry run that predicts it.

Both run the same SELECT: every contact of the campaign's audience with the
state it would get (pending, held until its local quiet hours end, or skipped
with a reason). A launch inserts it into Recipient rows with one
INSERT ... SELECT; a dry run groups it. Given the same ``now`` they agree by
construction, and neither loops over contacts in Python.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from campaigns.models import Campaign, RecipientState, SkipReason
from campaigns.quiet_hours import quiet_releases
from campaigns.selectors import segment_where
from campaigns.services import arms
from messaging.models import MessageTemplate
from messaging.rendering import CONTACT_FIELDS, content_variable_name, placeholder_names, value_text
from messaging.services.send import WHATSAPP_WINDOW

# Recipients that count against the frequency cap: planned or sent, not skipped or failed.
CAP_STATES = (RecipientState.PENDING, RecipientState.HELD, RecipientState.SENDING, RecipientState.SENT)


@dataclass(frozen=True)
class Snapshot:
    """The SELECT (contact_id, state, reason, detail, release_at, arm) for a campaign at an instant."""

    sql: str
    params: list


def snapshot_query(campaign: Campaign, now: dt.datetime) -> Snapshot:
    audience_sql, audience_params = _audience_where(campaign, now)
    quiet_sql, quiet_params = _quiet_join(campaign, now)
    cap_sql, cap_params = _cap_join(campaign, now)
    missing_sql, missing_params = _missing_variable_expr(campaign)
    window_sql, window_params = _outside_window_expr(campaign, now)
    arm = arms.arm_sql(campaign)
    plan = arms.arm_plan(campaign)
    # Waiting for a test's winner: held without a release time until the winner is picked.
    waiting = "s.arm IS NULL" if plan is not None and plan.waits_for_winner else "false"
    expires_at = now + campaign.validity if campaign.validity else None
    reason = f"""CASE
        WHEN audience_contact.consent_status <> 'opted_in' THEN '{SkipReason.OPTED_OUT}'
        WHEN k.contact_id IS NOT NULL THEN '{SkipReason.CAPPED}'
        WHEN ({missing_sql}) IS NOT NULL THEN '{SkipReason.MISSING_VARIABLE}'
        WHEN {window_sql} THEN '{SkipReason.OUTSIDE_WINDOW}'
        WHEN %s::timestamptz IS NOT NULL AND q.release_at > %s::timestamptz THEN '{SkipReason.EXPIRED}'
    END"""
    inner = f"""
        SELECT audience_contact.id AS contact_id, {reason} AS reason, ({missing_sql}) AS missing, q.release_at,
               {arm.expression} AS arm
        FROM audience_contact
        {quiet_sql}
        {cap_sql}
        {arm.join}
        WHERE {audience_sql}"""
    inner_params = [
        *missing_params,
        *window_params,
        expires_at,
        expires_at,
        *missing_params,
        *arm.params,
        *quiet_params,
        *cap_params,
        *arm.join_params,
        *audience_params,
    ]
    sql = f"""
        SELECT s.contact_id,
               CASE WHEN s.reason IS NOT NULL OR s.arm = {arms.CONTROL_ARM} THEN '{RecipientState.SKIPPED}'
                    WHEN {waiting} OR s.release_at IS NOT NULL THEN '{RecipientState.HELD}'
                    ELSE '{RecipientState.PENDING}' END AS state,
               COALESCE(s.reason, CASE WHEN s.arm = {arms.CONTROL_ARM} THEN '{SkipReason.CONTROL}' END, '') AS reason,
               CASE WHEN s.reason = '{SkipReason.MISSING_VARIABLE}' THEN 'missing variable ' || s.missing
                    ELSE '' END AS detail,
               CASE WHEN s.reason IS NULL AND s.arm IS DISTINCT FROM {arms.CONTROL_ARM} AND NOT ({waiting})
                    THEN s.release_at END AS release_at,
               s.arm
        FROM ({inner}) s"""
    return Snapshot(sql, inner_params)


def _audience_where(campaign: Campaign, now: dt.datetime) -> tuple[str, list]:
    """WHERE over audience_contact: the segment (or every opted-in contact) and the topic."""
    clauses, params = [], []
    if campaign.segment_id:
        sql, segment_params = segment_where(campaign.segment, now=now)
        clauses.append(f"({sql})")
        params += list(segment_params)
    else:
        clauses.append("audience_contact.consent_status = 'opted_in'")
    if campaign.topic_id:
        clauses.append(
            "EXISTS (SELECT 1 FROM audience_contacttopic ct"
            " WHERE ct.contact_id = audience_contact.id AND ct.topic_id = %s)"
        )
        params.append(campaign.topic_id)
    return " AND ".join(clauses), params


def _quiet_join(campaign: Campaign, now: dt.datetime) -> tuple[str, list]:
    """LEFT JOIN q(tz, release_at): the time zones now inside quiet hours and when they end.

    Quiet hours are worked out once per distinct time zone in Python (zoneinfo knows DST),
    never once per contact.
    """
    empty = "LEFT JOIN (SELECT NULL::text AS tz, NULL::timestamptz AS release_at WHERE false) q ON false"
    if campaign.quiet_start is None or campaign.quiet_end is None:
        return empty, []
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT timezone FROM audience_contact WHERE timezone <> ''")
        zones = {row[0] for row in cursor.fetchall()}
    zones.add(settings.DEFAULT_TIMEZONE)
    releases = quiet_releases(now, sorted(zones), campaign.quiet_start, campaign.quiet_end)
    if not releases:
        return empty, []
    values = ", ".join(["(%s, %s::timestamptz)"] * len(releases))
    params = [value for item in releases.items() for value in item]
    sql = f"LEFT JOIN (VALUES {values}) q(tz, release_at) ON q.tz = COALESCE(NULLIF(audience_contact.timezone, ''), %s)"
    return sql, [*params, settings.DEFAULT_TIMEZONE]


def quiet_join(campaign: Campaign, now: dt.datetime) -> tuple[str, list]:
    """The quiet-hours join for other statements over audience_contact (a test's winner release)."""
    return _quiet_join(campaign, now)


def _cap_join(campaign: Campaign, now: dt.datetime) -> tuple[str, list]:
    """LEFT JOIN k(contact_id): contacts that already have `frequency_cap` campaign messages in the window."""
    if not campaign.frequency_cap or not campaign.frequency_window:
        return "LEFT JOIN (SELECT NULL::bigint AS contact_id WHERE false) k ON false", []
    placeholders = ", ".join(["%s"] * len(CAP_STATES))
    sql = f"""LEFT JOIN (
            SELECT r.contact_id FROM campaigns_recipient r
            WHERE r.state IN ({placeholders}) AND r.created_at > %s
            GROUP BY r.contact_id HAVING count(*) >= %s
        ) k ON k.contact_id = audience_contact.id"""
    return sql, [*CAP_STATES, now - campaign.frequency_window, campaign.frequency_cap]


def template_required_names(template: MessageTemplate) -> list[str]:
    """Contact fields and attributes the template needs and has no usable fallback for."""
    if template.content_sid:
        names = [content_variable_name(value) for value in (template.content_variables or {}).values()]
    else:
        names = placeholder_names(template.body)
    fallbacks = template.fallbacks or {}
    required = []
    for name in dict.fromkeys(names):
        if value_text(fallbacks.get(name)) is None and not name.startswith("event."):
            required.append(name)
    return required


def _missing_variable_expr(campaign: Campaign) -> tuple[str, list]:
    """SQL naming the first template variable the contact lacks, or NULL; the same rule as rendering.

    A value is missing when absent, null or blank; numbers, booleans and objects never are.
    """
    cases, params = [], []
    names = [name for template in arms.campaign_templates(campaign) for name in template_required_names(template)]
    for name in dict.fromkeys(names):
        if name.startswith("attributes."):
            value = "(audience_contact.attributes ->> %s)"
            cases.append(f"WHEN {value} IS NULL OR btrim({value}) = '' THEN %s")
            params += [name.split(".", 1)[1], name.split(".", 1)[1], name]
        elif name in CONTACT_FIELDS:
            cases.append(f"WHEN btrim(COALESCE(audience_contact.{name}, '')) = '' THEN %s")
            params.append(name)
    if not cases:
        return "NULL::text", []
    return f"CASE {' '.join(cases)} END", params


def _outside_window_expr(campaign: Campaign, now: dt.datetime) -> tuple[str, list]:
    """Free-form WhatsApp text may only go to contacts who wrote within the last 24 h."""
    free_form = any(not template.content_sid for template in arms.campaign_templates(campaign))
    if campaign.sender.channel != "whatsapp" or not free_form:
        return "false", []
    return "(audience_contact.last_inbound_at IS NULL OR audience_contact.last_inbound_at < %s)", [
        now - WHATSAPP_WINDOW
    ]


def snapshot_insert(run_id: int, snapshot: Snapshot) -> dict[tuple[str, str], int]:
    """Insert the snapshot as the run's Recipient rows; returns counts by (state, reason).

    The experiment's arm sizes (eligible recipients by arm) go to the run in the same transaction.
    """
    sql = f"""
        WITH inserted AS (
            INSERT INTO campaigns_recipient (run_id, contact_id, state, reason, detail, release_at, arm, created_at)
            SELECT %s, s.contact_id, s.state, s.reason, s.detail, s.release_at, s.arm, now()
            FROM ({snapshot.sql}) s
            ON CONFLICT (run_id, contact_id) WHERE event_id IS NULL DO NOTHING
            RETURNING state, reason, arm
        )
        SELECT state, reason, arm, count(*) FROM inserted GROUP BY state, reason, arm"""
    with connection.cursor() as cursor:
        cursor.execute(sql, [run_id, *snapshot.params])
        rows = cursor.fetchall()
    counts: Counter[tuple[str, str]] = Counter()
    sizes: Counter[str] = Counter()
    for state, reason, arm, count in rows:
        counts[(state, reason)] += count
        if (arm is not None or state == RecipientState.HELD) and arms.eligible(state, reason):
            sizes[arms.arm_key(arm)] += count
    if any(key != arms.WAITING for key in sizes):
        arms.sizes_add(run_id, sizes)
    return dict(counts)


ANALYZE_AFTER = 10_000  # recipients inserted at once that make the table's statistics stale


def recipients_analyze() -> None:
    """Refresh the planner's statistics of the recipients after a big snapshot.

    Autovacuum gets to it within a minute or so; until then the planner still thinks the run
    is small, and the dispatch and counting queries of its first batches scan the whole table.
    """
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE campaigns_recipient")


def snapshot_summary(snapshot: Snapshot) -> list[tuple[str, str, int, dt.datetime | None, dt.datetime | None]]:
    """Counts by (state, reason) with the earliest and latest release time, inserting nothing."""
    sql = f"""
        SELECT s.state, s.reason, count(*), min(s.release_at), max(s.release_at)
        FROM ({snapshot.sql}) s GROUP BY s.state, s.reason ORDER BY s.state, s.reason"""
    with connection.cursor() as cursor:
        cursor.execute(sql, snapshot.params)
        return cursor.fetchall()


def snapshot_sample(snapshot: Snapshot, limit: int) -> list[int]:
    """Ids of a few contacts that would be sent to (pending first, then held)."""
    sql = f"""
        SELECT s.contact_id FROM ({snapshot.sql}) s
        WHERE s.state IN ('{RecipientState.PENDING}', '{RecipientState.HELD}')
        ORDER BY s.state DESC, s.contact_id LIMIT %s"""
    with connection.cursor() as cursor:
        cursor.execute(sql, [*snapshot.params, limit])
        return [row[0] for row in cursor.fetchall()]
