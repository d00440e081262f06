"""The engine's SQL: its tables, the phone hash, the stage and the row checks (the writes: ``sql_upsert``).

Table names are the engine's own (never user input); values are parameters.
"""

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
