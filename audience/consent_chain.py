"""The consent audit as a hash chain: every ConsentEvent is sealed to the one before it.

Each event has a position ``seq`` (1, 2, 3, ... with no gaps) and
``chain_hash = SHA-256(previous event's chain_hash || entry)``, the first event
chaining to 32 zero bytes. The entry is the canonical JSON text of the event's
position, id, kind, time (microseconds since the epoch), statuses, source,
actor and ``personal_digest``. The personal fields (contact, phone hash,
evidence) enter only through that digest, SHA-256 of their canonical JSON,
stored beside them when the event is written: erasing a person blanks their
events' contact and evidence, the stored digest keeps the chain whole, and the
erasure is itself a chained event (kind ``erasure``) naming the events it
blanked. ``consent_chain_verify`` therefore tells an erased event from an
edited one. docs/consent.md explains the choice.

The canonical forms and the hash are PostgreSQL functions (migration
0015_consent_audit_chain), the one definition every writer and the verifier
use: ``audience_consent_personal_digest``, ``audience_consent_entry``,
``audience_consent_link`` and the running aggregate ``audience_consent_chain``.
Writers take a transaction-level advisory lock, read the head and insert after
it, so concurrent writers (requests, tasks, an import's two writer sessions)
make one linear chain; the lock is held until their transaction ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from audience.models import ConsentEvent, ConsentEventKind, Contact
from audience.phones import phone_hash
from config.sql import literal

TABLE = "audience_consentevent"
GENESIS = bytes(32)
# pg_advisory_xact_lock key of the chain: the first 8 bytes of SHA-256("audience.consent_chain"), signed.
LOCK_KEY = -2999580041397565707
ERASED_EVENTS = "erased_events"  # the key of an erasure event's evidence listing the events it blanked

_COLUMNS = "contact_id, phone_hash, kind, from_status, to_status, source, actor, evidence, created_at"


def chain_head(cursor) -> tuple[int, bytes, str]:
    """Lock the chain until the transaction ends; the last (seq, chain_hash) and the events' id sequence.

    Two statements on purpose: under READ COMMITTED the head is read with a snapshot taken
    after the lock was granted, so it sees the previous holder's committed events.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("consent events are chained inside a transaction (the lock ends with it)")
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
    cursor.execute(
        f"SELECT seq, chain_hash, pg_get_serial_sequence('{TABLE}', 'id') FROM {TABLE} ORDER BY seq DESC LIMIT 1"
    )
    row = cursor.fetchone()
    if row is None:
        cursor.execute(f"SELECT pg_get_serial_sequence('{TABLE}', 'id')")
        return 0, GENESIS, cursor.fetchone()[0]
    return row[0], bytes(row[1]), row[2]


def chained_insert_sql(rows_sql: str, id_sequence: str, *, returning: bool = False) -> str:
    """An INSERT of the events ``rows_sql`` selects, sealed after the head (%(head_seq)s, %(head_hash)s).

    ``rows_sql`` selects the columns of ``_COLUMNS`` plus ``position``: 1, 2, 3, ... in the order
    the events take in the chain. Ids come from the sequence here so that each entry can include
    its own. ``returning``: the statement returns each row's id, seq, personal_digest and chain_hash.
    """
    return f"""
    INSERT INTO {TABLE} (id, seq, {_COLUMNS}, personal_digest, chain_hash)
    SELECT id, seq, {_COLUMNS}, personal_digest,
           audience_consent_chain(%(head_hash)s::bytea, audience_consent_entry(
               seq, id, kind, created_at, from_status, to_status, source, actor, personal_digest
           )) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING)
    FROM (
        SELECT r.*, nextval('{id_sequence}') AS id, %(head_seq)s::bigint + r.position AS seq,
               audience_consent_personal_digest(r.contact_id, r.phone_hash, r.evidence) AS personal_digest
        FROM ({rows_sql}) AS r
    ) AS e
    {"RETURNING id, seq, personal_digest, chain_hash" if returning else ""}"""


def consent_events_insert(cursor, rows_sql: str, params: dict | None = None, *, returning: bool = False) -> int:
    """Write the events ``rows_sql`` selects at the end of the chain; returns how many.

    ``returning``: the cursor then holds their (id, seq, personal_digest, chain_hash) rows.
    """
    head_seq, head_hash, id_sequence = chain_head(cursor)
    statement = chained_insert_sql(rows_sql, id_sequence, returning=returning)
    cursor.execute(statement, {**(params or {}), "head_seq": head_seq, "head_hash": head_hash})
    return cursor.rowcount


_ONE_EVENT = """
    SELECT %(contact_id)s::bigint AS contact_id, %(phone_hash)s::varchar AS phone_hash, %(kind)s::varchar AS kind,
           %(from_status)s::varchar AS from_status, %(to_status)s::varchar AS to_status,
           %(source)s::varchar AS source, %(actor)s::varchar AS actor, %(evidence)s::jsonb AS evidence,
           %(created_at)s::timestamptz AS created_at, 1 AS position"""


@transaction.atomic
def consent_event_record(
    *,
    contact: Contact | None,
    hashed_phone: str,
    to_status: str = "",
    from_status: str = "",
    source: str = "",
    actor: str = "",
    evidence: dict | None = None,
    kind: str = ConsentEventKind.CHANGE,
    created_at: datetime | None = None,
) -> ConsentEvent:
    """Append one event to the consent audit (the caller's transaction keeps the chain locked)."""
    event = ConsentEvent(
        contact=contact,
        phone_hash=hashed_phone,
        kind=kind,
        from_status=from_status,
        to_status=to_status,
        source=source,
        actor=actor,
        evidence=evidence or {},
        created_at=created_at or timezone.now(),
    )
    names = ("phone_hash", "kind", "from_status", "to_status", "source", "actor")
    params = {name: str(getattr(event, name)) for name in names}  # choices' members as their values
    params.update(contact_id=event.contact_id, evidence=json.dumps(event.evidence), created_at=event.created_at)
    with connection.cursor() as cursor:
        consent_events_insert(cursor, _ONE_EVENT, params, returning=True)
        [(event.id, event.seq, digest, chain_hash)] = cursor.fetchall()
    event.personal_digest, event.chain_hash = bytes(digest), bytes(chain_hash)
    event._state.adding = False
    return event


@transaction.atomic
def consent_events_erase(contact: Contact, *, actor: str) -> ConsentEvent | None:
    """Blank the personal fields of a contact's events, and chain an erasure event that names them.

    Their stored digests keep the chain verifiable; the erasure event says which events may
    no longer match their digest, and who erased them when. Returns it (None: no events).
    """
    events = ConsentEvent.objects.select_for_update().filter(contact_id=contact.pk).order_by("seq")
    erased = list(events.values_list("pk", flat=True))
    if not erased:
        return None
    ConsentEvent.objects.filter(pk__in=erased).update(contact=None, evidence={})
    return consent_event_record(
        contact=None,
        hashed_phone=phone_hash(contact.phone),
        kind=ConsentEventKind.ERASURE,
        actor=actor,
        evidence={ERASED_EVENTS: erased},
    )


# --- verification -------------------------------------------------------------------------------

_VERIFY = f"""
WITH erased AS (
    SELECT DISTINCT x.id::bigint AS id
    FROM {TABLE} e CROSS JOIN LATERAL jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(e.evidence -> '{ERASED_EVENTS}') = 'array' THEN e.evidence -> '{ERASED_EVENTS}'
             ELSE '[]'::jsonb END
    ) AS x(id)
    WHERE e.kind = {literal(ConsentEventKind.ERASURE)} AND x.id ~ '^[0-9]{{1,18}}$'
), checked AS (
    SELECT e.id, e.seq, lag(e.seq) OVER w AS prev_seq,
           e.chain_hash = audience_consent_link(
               coalesce(lag(e.chain_hash) OVER w, %(genesis)s::bytea),
               audience_consent_entry(
                   e.seq, e.id, e.kind, e.created_at, e.from_status, e.to_status, e.source, e.actor, e.personal_digest
               )
           ) AS link_ok,
           e.personal_digest = audience_consent_personal_digest(e.contact_id, e.phone_hash, e.evidence) AS personal_ok,
           e.contact_id IS NULL AND e.evidence = '{{}}'::jsonb AS blank
    FROM {TABLE} e
    WINDOW w AS (ORDER BY e.seq)
)
SELECT c.id, c.seq, c.prev_seq, c.link_ok, c.personal_ok, c.blank AND x.id IS NOT NULL AS erased
FROM checked c LEFT JOIN erased x ON x.id = c.id
WHERE NOT c.link_ok OR NOT c.personal_ok OR c.seq <> coalesce(c.prev_seq, 0) + 1
ORDER BY c.seq"""


@dataclass
class ChainReport:
    """What ``consent_chain_verify`` found: the events checked, the head, and each problem in chain order."""

    events: int = 0
    head_seq: int = 0
    head_hash: bytes = GENESIS
    erased: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def consent_chain_verify(*, expect_head: tuple[int, bytes] | None = None) -> ChainReport:
    """Walk the whole chain in the database and name every event that was edited, inserted or deleted.

    ``expect_head`` (seq, hash) is a head recorded earlier (``consent_verify`` prints it): events
    removed from the end, or a chain rewritten whole, are found only against such a record.
    """
    report = ChainReport()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {TABLE}")
        report.events = cursor.fetchone()[0]
        cursor.execute(f"SELECT seq, chain_hash FROM {TABLE} ORDER BY seq DESC LIMIT 1")
        head = cursor.fetchone()
        if head:
            report.head_seq, report.head_hash = head[0], bytes(head[1])
        cursor.execute(_VERIFY, {"genesis": GENESIS})
        for event_id, seq, prev_seq, link_ok, personal_ok, erased in cursor.fetchall():
            _explain(report, event_id, seq, prev_seq, link_ok, personal_ok, erased)
        if expect_head is not None:
            _check_expected_head(cursor, report, *expect_head)
    return report


def _explain(report: ChainReport, event_id, seq, prev_seq, link_ok, personal_ok, erased) -> None:
    where = f"event {event_id} at position {seq}"
    expected = (prev_seq or 0) + 1
    if seq > expected:
        missing = f"position {expected}" if seq == expected + 1 else f"positions {expected} to {seq - 1}"
        report.problems.append(f"{missing} missing before {where}: event(s) deleted")
    elif seq < expected:
        report.problems.append(f"{where}: a second event at this position (inserted)")
    if not link_ok:
        report.problems.append(
            f"{where}: does not match its hash (its fields were edited, it was inserted, "
            "or the event before it was removed or replaced)"
        )
    if not personal_ok:
        if erased:
            report.erased += 1
        else:
            report.problems.append(f"{where}: its contact, phone hash or evidence changed after it was written")


def _check_expected_head(cursor, report: ChainReport, seq: int, chain_hash: bytes) -> None:
    cursor.execute(f"SELECT chain_hash FROM {TABLE} WHERE seq = %s", [seq])
    row = cursor.fetchone()
    if row is None:
        report.problems.append(
            f"the recorded head (position {seq}) is gone: events were deleted from the end (the chain ends at "
            f"{report.head_seq})"
        )
    elif bytes(row[0]) != chain_hash:
        report.problems.append(f"the event at the recorded head (position {seq}) is not the one recorded")
