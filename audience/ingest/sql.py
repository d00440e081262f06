"""The engine's SQL. Table names are the engine's own (never user input); values are parameters."""

from __future__ import annotations

from audience.choices import Channel, ConsentEventKind, ConsentSource, ConsentStatus, RowProblemLevel
from audience.phones import phone_hash_pads

CONTACT = "audience_contact"
# A bucket's consent events wait here, in its transaction, until the audit chain is locked for them.
PENDING_EVENTS = "audience_ingest_pending_events"
CONTACT_TOPIC = "audience_contacttopic"
TOPIC = "audience_topic"
ROW_ERROR = "audience_importrowerror"
SUPPRESSION = "audience_suppression"


# HMAC's inner and outer keys, set per transaction by ``phone_hash_key_set`` (hex). Kept out of the
# statements that use them: PostgreSQL logs a failing statement's text (a unique violation the
# engine expects, for one), and the key must not reach the server's log.
_PAD_SETTINGS = ("audience.phone_hash_inner", "audience.phone_hash_outer")


def phone_hash(column: str) -> str:
    """audience.phones.phone_hash in SQL (HMAC-SHA256 of the hex SHA-256, built from sha256()): C in the
    database, not a Python call a row. The transaction must have run ``phone_hash_key_set`` first."""
    return phone_digest_keyed(f"encode(sha256(convert_to({column}, 'UTF8')), 'hex')")


def phone_digest_keyed(digest: str) -> str:
    """audience.phones.phone_digest_keyed in SQL, of a hex digest expression."""
    inner, outer = (f"decode(current_setting('{name}'), 'hex')" for name in _PAD_SETTINGS)
    return f"encode(sha256({outer} || sha256({inner} || convert_to({digest}, 'UTF8'))), 'hex')"


def phone_hash_key_set(cursor) -> None:
    """Make the key known to ``phone_hash`` until the end of the cursor's transaction."""
    inner, outer = phone_hash_pads()
    cursor.execute(
        "SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
        [_PAD_SETTINGS[0], inner.hex(), _PAD_SETTINGS[1], outer.hex()],
    )


# The choices the statements name, passed with every statement's parameters (``ENUMS``) rather than
# written into the SQL.
ENUMS = {
    "opted_in": ConsentStatus.OPTED_IN.value,
    "opted_out": ConsentStatus.OPTED_OUT.value,
    "sms": Channel.SMS.value,
    "import_source": ConsentSource.IMPORT.value,
    "change_kind": ConsentEventKind.CHANGE.value,
    "warning": RowProblemLevel.WARNING.value,
    "error": RowProblemLevel.ERROR.value,
}

STAGE_PREFIX = "audience_ingest_stage_"


def stage_name(job_id: int) -> str:
    return f"{STAGE_PREFIX}{int(job_id)}"


def create_stage(stage: str, buckets: int) -> list[str]:
    """The staging table, partitioned by bucket: each bucket's upsert reads only its own rows.

    The parent holds no rows (so it cannot be UNLOGGED); its partitions are.
    """
    statements = [
        f"""
        CREATE TABLE {stage} (
            line integer NOT NULL,
            bucket smallint NOT NULL,
            phone varchar(16) NOT NULL,
            name text, email text, channel text, locale text, timezone text, consent text,
            attributes jsonb, topics text[],
            suppressed boolean NOT NULL DEFAULT false,
            contact_id bigint  -- set by take_existing on a row that changes its contact
        ) PARTITION BY LIST (bucket)"""
    ]
    for bucket in range(buckets):
        statements.append(
            f"CREATE UNLOGGED TABLE {stage_bucket(stage, bucket)} PARTITION OF {stage} FOR VALUES IN ({int(bucket)}) "
            "WITH (autovacuum_enabled = false)"
        )
    return statements


def copy_from_stdin(table: str, columns) -> str:
    names = ", ".join(f'"{name}"' for name in columns)
    return f"COPY {table} ({names}) FROM STDIN"


def stage_bucket(stage: str, bucket: int) -> str:
    return f"{stage}_b{int(bucket)}"


def drop_stage(stage: str) -> str:
    return f"DROP TABLE IF EXISTS {stage}"


def remove_duplicates(stage: str) -> str:
    """Keep the last row of each phone; report every earlier one as a warning.

    "Last" is the highest line, then the row stored last: elements of a JSON array on one line
    (a minified file) share their line, and they arrive in order within a chunk.
    """
    return f"""
        WITH ranked AS (
            SELECT ctid AS row, line, phone,
                   row_number() OVER w AS rank, first_value(line) OVER w AS kept
            FROM {stage}
            WHERE phone IN (SELECT phone FROM {stage} GROUP BY phone HAVING count(*) > 1)
            WINDOW w AS (PARTITION BY phone ORDER BY line DESC, ctid DESC)
        ), gone AS (
            DELETE FROM {stage} s USING ranked r WHERE s.ctid = r.row AND r.rank > 1
            RETURNING s.line, s.phone, r.kept
        )
        INSERT INTO {ROW_ERROR} (job_id, line, "column", level, reason, value)
        SELECT %(job)s, line, 'phone', %(warning)s,
               'duplicate of line ' || kept || ' (same phone); the later row wins', phone
        FROM gone"""


def index_stage(stage_bucket: str) -> str:
    """After deduplication: the upsert's ON CONFLICT branch looks the staged row up by phone."""
    return f"CREATE UNIQUE INDEX ON {stage_bucket} (phone)"


def mark_suppressed(stage: str) -> str:
    return f"""
        UPDATE {stage} s SET suppressed = true FROM {SUPPRESSION} x
        WHERE x.phone_hash = {phone_hash("s.phone")}"""


def warn_suppressed(stage: str) -> str:
    return f"""
        INSERT INTO {ROW_ERROR} (job_id, line, "column", level, reason, value)
        SELECT %(job)s, line, 'phone', %(warning)s,
               'this phone is on the suppression list; it stays opted out', phone
        FROM {stage} WHERE suppressed AND coalesce(consent, %(default)s) = %(opted_in)s"""


# What a row is told that would create a contact without a consent: the file's cell is empty and the
# import chose no default (a consent is never assumed).
NO_CONSENT = "this row gives no consent and the import no default consent; a new contact's consent is never assumed"


def drop_without_consent(stage: str) -> str:
    """Report and remove the rows that would create a contact without a consent; returns their count.

    Only for an import without a default consent. A row of an existing contact may leave the
    consent out: an import never changes it but to opt out.
    """
    return f"""
    WITH missing AS (
        DELETE FROM {stage} s
        WHERE s.consent IS NULL AND NOT EXISTS (SELECT 1 FROM {CONTACT} c WHERE c.phone = s.phone)
        RETURNING s.line
    ), reported AS (
        INSERT INTO {ROW_ERROR} (job_id, line, "column", level, reason, value)
        SELECT %(job)s, line, 'consent', %(error)s, %(no_consent)s, '' FROM missing
        RETURNING 1
    )
    SELECT count(*) FROM reported"""


# What a row that asks to opt in a contact who opted out is told; {when} is " on <date>" when known.
REFUSED_OPT_IN = (
    "this contact opted out{when}; an import does not opt them back in"
    " (they can reply START, or staff can record their consent with evidence)"
)


def refused_opt_in(opted_out_at) -> str:
    return REFUSED_OPT_IN.format(when=f" on {opted_out_at:%Y-%m-%d}" if opted_out_at else "")


def has_opt_ins(stage: str) -> str:
    return f"SELECT EXISTS (SELECT 1 FROM {stage} WHERE consent = %(opted_in)s)"


def warn_refused_opt_ins(stage: str) -> str:
    """Report each row that asks to opt in a contact who opted out (``_EXISTING_STATUS`` keeps them out).

    Words it as ``refused_opt_in`` does (parameter ``refused``: REFUSED_OPT_IN). Returns the number of rows reported.
    """
    return f"""
    WITH reported AS (
        INSERT INTO {ROW_ERROR} (job_id, line, "column", level, reason, value)
        SELECT %(job)s, s.line, 'consent', %(warning)s,
               replace(%(refused)s, '{{when}}',
                       coalesce(' on ' || to_char(c.opted_out_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), '')),
               s.consent
        FROM {stage} s JOIN {CONTACT} c ON c.phone = s.phone
        WHERE s.consent = %(opted_in)s AND c.consent_status = %(opted_out)s
        RETURNING 1
    )
    SELECT count(*) FROM reported"""


# The new consent of an existing contact: an import can opt a contact out, never
# back in. A contact who opted out (a STOP, the provider, staff) stays so until
# they opt in themselves (START) or staff record their consent with evidence;
# a file's "opted_in" for them is reported (``warn_refused_opt_ins``).
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
# row's or the import's default; a row with neither was dropped (``drop_without_consent``) unless its
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
