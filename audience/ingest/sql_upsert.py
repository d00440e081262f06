"""The engine's writes: the upsert of a bucket's contacts, their consent events and topics, and the
dry run's question of which rows would change their contact.

Table names are the engine's own (never user input); values are parameters (``sql.ENUMS`` with every statement).
"""

from __future__ import annotations

from audience.ingest.sql import CONTACT, CONTACT_TOPIC, PENDING_EVENTS, TOPIC, phone_hash

# The new consent of an existing contact: an import can opt a contact out, never
# back in. A contact who opted out (a STOP, the provider, staff) stays so until
# they opt in themselves (START) or staff record their consent with evidence;
# a file's "opted_in" for them is reported (``sql.warn_refused_opt_ins``).
_EXISTING_STATUS = "CASE WHEN s.consent = %(opted_out)s THEN %(opted_out)s ELSE c.consent_status END"

_CHANGES = f"""
    (s.channel IS NOT NULL AND s.channel <> c.channel)
    OR (s.name IS NOT NULL AND s.name <> c.name)
    OR (s.email IS NOT NULL AND s.email <> c.email)
    OR (s.locale IS NOT NULL AND s.locale <> c.locale)
    OR (s.timezone IS NOT NULL AND s.timezone <> c.timezone)
    OR (s.attributes IS NOT NULL AND c.attributes || s.attributes <> c.attributes)
    OR ({_EXISTING_STATUS}) <> c.consent_status"""

_ON_CONFLICT_UPDATE = f"""
    ON CONFLICT (phone) DO UPDATE SET
        (channel, name, email, locale, timezone, attributes,
         consent_status, consent_updated_at, opted_in_at, opted_out_at, updated_at) = (
        SELECT coalesce(s.channel, c.channel), coalesce(s.name, c.name), coalesce(s.email, c.email),
               coalesce(s.locale, c.locale), coalesce(s.timezone, c.timezone),
               c.attributes || coalesce(s.attributes, '{{}}'::jsonb),
               x.status,
               CASE WHEN x.status <> c.consent_status THEN now() ELSE c.consent_updated_at END,
               CASE WHEN x.status <> c.consent_status AND x.status = %(opted_in)s THEN now() ELSE c.opted_in_at END,
               CASE WHEN x.status <> c.consent_status AND x.status = %(opted_out)s THEN now() ELSE c.opted_out_at END,
               now()
        FROM __STAGE__ s CROSS JOIN LATERAL (SELECT {_EXISTING_STATUS} AS status) x
        WHERE s.phone = EXCLUDED.phone)
    WHERE EXISTS (SELECT 1 FROM __STAGE__ s WHERE s.phone = EXCLUDED.phone AND ({_CHANGES}))"""


def create_pending_events() -> str:
    """The bucket's consent events before they are chained; dropped when its transaction ends."""
    return f"""
    CREATE TEMPORARY TABLE {PENDING_EVENTS} (
        contact_id bigint NOT NULL, phone varchar(16) NOT NULL, from_status text NOT NULL, to_status text NOT NULL,
        line integer NOT NULL, suppressed boolean NOT NULL
    ) ON COMMIT DROP"""


def has_pending_events() -> str:
    return f"SELECT EXISTS (SELECT 1 FROM {PENDING_EVENTS})"


def pending_events() -> str:
    """The bucket's consent events as audience.consent_chain writes events, in file order."""
    return f"""
        SELECT p.contact_id, {phone_hash("p.phone")} AS phone_hash, %(change_kind)s::varchar AS kind,
               p.from_status, p.to_status, %(import_source)s::varchar AS source, %(actor)s::varchar AS actor,
               {_event_evidence("p")} AS evidence, now() AS created_at,
               row_number() OVER (ORDER BY p.line, p.contact_id) AS position
        FROM {PENDING_EVENTS} p"""


def _event_evidence(rows: str) -> str:
    return f"""jsonb_build_object('import_job', %(job)s::bigint, 'line', {rows}.line)
                 || CASE WHEN {rows}.suppressed THEN '{{"suppressed": true}}'::jsonb ELSE '{{}}'::jsonb END"""


def _topic_links(rows: str, condition: str = "TRUE") -> str:
    """(contact, topic) pairs of ``rows`` (id, topics) that meet ``condition``: the row's topics and the job's."""
    return f"""
        SELECT DISTINCT {rows}.id, t.id, now()
        FROM {rows} CROSS JOIN LATERAL unnest(coalesce({rows}.topics, '{{}}') || %(extra_topics)s::text[]) AS n(name)
        JOIN {TOPIC} t ON t.name = n.name
        WHERE {condition} AND ({rows}.topics IS NOT NULL OR cardinality(%(extra_topics)s::text[]) > 0)"""


# A new contact's columns and values, from staged rows with their ``new_status``. Its consent is the
# row's or the import's default; a row with neither was dropped (``sql.drop_without_consent``) unless its
# contact was deleted since, and then it is created opted out: never opted in by assumption.
_NEW_STATUS = "CASE WHEN s.suppressed THEN %(opted_out)s ELSE coalesce(s.consent, %(default)s, %(opted_out)s) END"
_NEW_CONTACT_COLUMNS = """phone, channel, name, email, locale, timezone, attributes, consent_status,
                          consent_updated_at, opted_in_at, opted_out_at, created_at, updated_at"""
_NEW_CONTACT_VALUES = """phone, coalesce(channel, %(sms)s), coalesce(name, ''), coalesce(email, ''),
               coalesce(locale, 'en'), coalesce(timezone, ''), coalesce(attributes, '{}'::jsonb), new_status, now(),
               CASE WHEN new_status = %(opted_in)s THEN now() END, CASE WHEN new_status = %(opted_out)s THEN now() END,
               now(), now()"""


def upsert(stage: str, *, update_existing: bool) -> str:
    """One statement per bucket: contacts, their consent events and topics. Returns (staged, created, changed)."""
    if update_existing:
        conflict = _ON_CONFLICT_UPDATE.replace("__STAGE__", stage)
    else:
        conflict = "ON CONFLICT (phone) DO NOTHING"
    return f"""
    WITH src AS (
        SELECT s.*, {_NEW_STATUS} AS new_status
        FROM {stage} s WHERE s.bucket = %(bucket)s
    ), up AS (
        INSERT INTO {CONTACT} AS c ({_NEW_CONTACT_COLUMNS})
        SELECT {_NEW_CONTACT_VALUES}
        FROM src
        {conflict}
        RETURNING c.id, c.phone, c.consent_status, (c.xmax = 0) AS inserted, (c.consent_updated_at = now()) AS moved
    ), done AS (
        SELECT up.*, src.line, src.suppressed, src.topics FROM up JOIN src ON src.phone = up.phone
    ), events AS (
        INSERT INTO {PENDING_EVENTS} (contact_id, phone, from_status, to_status, line, suppressed)
        SELECT id, phone,
               CASE WHEN inserted THEN '' WHEN consent_status = %(opted_in)s THEN %(opted_out)s ELSE %(opted_in)s END,
               consent_status, line, suppressed
        FROM done WHERE moved
    ), new_topics AS (
        -- A contact created by this statement has no topics yet (no other session can see it): a plain
        -- INSERT, cheaper than ON CONFLICT's speculative insertion.
        INSERT INTO {CONTACT_TOPIC} (contact_id, topic_id, created_at)
        {_topic_links("done", "done.inserted")}
    ), topics AS (
        INSERT INTO {CONTACT_TOPIC} (contact_id, topic_id, created_at)
        {_topic_links("done", "NOT done.inserted")}
        ON CONFLICT DO NOTHING
    )
    SELECT (SELECT count(*) FROM src), count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
    FROM up"""


def _insert_rows(rows: str, id_sequence: str) -> str:
    """Staged rows ``s`` from ``rows`` inserted as new contacts, with their consent events and topic links.

    The contacts take their ids from the sequence here, so their consent events and
    topic links are written from the staged rows directly, without reading the
    inserted rows back (RETURNING) and joining them to the stage. No ON CONFLICT
    either (its speculative insertion was a quarter of the insert's cost): the
    caller knows no contact has these phones, and buckets hold disjoint phones; a
    contact another session creates meanwhile makes the statement fail with a
    unique violation, and the engine then writes the bucket through ``upsert``.
    The common table expressions only: the caller's statement ends with its SELECT.
    """
    return f"""
    src AS MATERIALIZED (
        SELECT nextval('{id_sequence}') AS id, s.line, s.phone, s.channel, s.name, s.email, s.locale, s.timezone,
               s.attributes, s.topics, s.suppressed,
               {_NEW_STATUS} AS new_status
        FROM {rows}
    ), contacts AS (
        INSERT INTO {CONTACT} (id, {_NEW_CONTACT_COLUMNS})
        SELECT id, {_NEW_CONTACT_VALUES}
        FROM src
    ), events AS (
        INSERT INTO {PENDING_EVENTS} (contact_id, phone, from_status, to_status, line, suppressed)
        SELECT id, phone, '', new_status, line, suppressed
        FROM src
    ), topics AS (
        INSERT INTO {CONTACT_TOPIC} (contact_id, topic_id, created_at)
        {_topic_links("src")}
    )"""


def insert_new(stage: str, id_sequence: str) -> str:
    """One statement per bucket when the contacts table was empty at the start: every staged row is new.

    Returns (staged, created, changed) like ``upsert``.
    """
    return f"WITH {_insert_rows(f'{stage} s', id_sequence)}\n    SELECT count(*), count(*), 0 FROM src"


def take_existing(stage: str, *, update_existing: bool) -> str:
    """Remove from the stage the rows whose contact exists and stays as it is; note the contact of the rest.

    Unchanged rows leave the stage with their topics added: ON CONFLICT DO UPDATE
    locks (and so writes and WAL-logs) every existing row it meets, even when its
    WHERE then declines the update, and a re-import of an unchanged list paid that
    for every row. A row that changes its contact keeps the contact's id, so that
    ``take_new`` can tell the new phones from it; skipping existing contacts takes
    every row that has one. The stage rows are joined back by ctid (the join to
    the contacts may run with nested loops). Returns the number of rows taken.
    """
    if not update_existing:
        return f"""
    WITH existing AS (
        DELETE FROM {stage} s USING {CONTACT} c WHERE c.phone = s.phone RETURNING s.line
    )
    SELECT count(*) FROM existing"""
    return f"""
    WITH matched AS MATERIALIZED (
        SELECT s.ctid AS row, c.id, NOT ({_CHANGES}) AS unchanged
        FROM {stage} s JOIN {CONTACT} c ON c.phone = s.phone
    ), unchanged AS (
        DELETE FROM {stage} s USING matched m WHERE s.ctid = m.row AND m.unchanged
        RETURNING m.id, s.topics
    ), topics AS (
        INSERT INTO {CONTACT_TOPIC} (contact_id, topic_id, created_at)
        {_topic_links("unchanged")}
        ON CONFLICT DO NOTHING
    ), changed AS (
        UPDATE {stage} s SET contact_id = m.id FROM matched m WHERE s.ctid = m.row AND NOT m.unchanged
    )
    SELECT count(*) FROM unchanged"""


def take_new(stage: str, id_sequence: str) -> str:
    """Remove from the stage the rows whose phone has no contact, inserting them as ``insert_new`` does.

    After ``take_existing``, a row without a contact id has no contact. A second
    list imported into a full table is mostly new phones; through
    ON CONFLICT each of them paid a speculative insertion and a RETURNING joined
    back to the stage. Returns the number of contacts created.
    """
    return f"""
    WITH new AS (
        DELETE FROM {stage} s WHERE s.contact_id IS NULL RETURNING s.*
    ), {_insert_rows("new s", id_sequence)}
    SELECT count(*) FROM src"""


def add_topics_to_unchanged(stage: str) -> str:
    """Topics for rows whose contact needed no other change (absent from the upsert's RETURNING)."""
    return f"""
    WITH declined AS (
        SELECT c.id, s.topics FROM {stage} s JOIN {CONTACT} c ON c.phone = s.phone WHERE s.bucket = %(bucket)s
    )
    INSERT INTO {CONTACT_TOPIC} (contact_id, topic_id, created_at)
    {_topic_links("declined")}
    ON CONFLICT DO NOTHING"""


# The dry run asks the engine's own question (``_CHANGES``) of the rows it shows: which would change
# their contact. Parameters: an array of each staged column named here, and ENUMS.
CHANGED_PHONES = f"""
    SELECT s.phone
    FROM unnest(%(phone)s::text[], %(channel)s::text[], %(name)s::text[], %(email)s::text[], %(locale)s::text[],
                %(timezone)s::text[], %(consent)s::text[], %(attributes)s::jsonb[])
         AS s(phone, channel, name, email, locale, timezone, consent, attributes)
    JOIN {CONTACT} c ON c.phone = s.phone
    WHERE {_CHANGES}"""
