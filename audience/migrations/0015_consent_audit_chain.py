"""The consent audit becomes a hash chain (audience/consent_chain.py, docs/consent.md).

1. The PostgreSQL functions every writer and the verifier share: the canonical
   forms of an event's personal fields and of its entry, one link of the chain,
   and the running chain as an aggregate for writes of many events at once.
2. Each event gets its position (seq), the digest of its personal fields and
   its chain hash; the events already written are chained in (created_at, id)
   order, as they stand (an event erased earlier is sealed erased).
3. The three columns become NOT NULL, and seq unique: an event written without
   the chain is refused by the database.

Reversible: going back drops the columns and the functions.
"""

from django.db import migrations, models

FUNCTIONS = [
    """
    CREATE FUNCTION audience_consent_personal_digest(contact_id bigint, phone_hash text, evidence jsonb)
    RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT sha256(convert_to(concat(
        coalesce(contact_id::text, '-'), ' ', length(phone_hash), ':', phone_hash, ' ', evidence::text
    ), 'UTF8')) $$
    """,
    """
    CREATE FUNCTION audience_consent_entry(
        seq bigint, id bigint, kind text, created_at timestamptz, from_status text, to_status text,
        source text, actor text, personal_digest bytea
    ) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT concat(
        seq, ' ', id, ' ', (extract(epoch FROM created_at) * 1000000)::bigint,
        ' ', length(kind), ':', kind, ' ', length(from_status), ':', from_status,
        ' ', length(to_status), ':', to_status, ' ', length(source), ':', source,
        ' ', length(actor), ':', actor, ' ', encode(personal_digest, 'hex')
    ) $$
    """,
    """
    CREATE FUNCTION audience_consent_link(previous bytea, entry text)
    RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT sha256(previous || convert_to(entry, 'UTF8')) $$
    """,
    """
    CREATE FUNCTION audience_consent_chain_step(state bytea, head bytea, entry text)
    RETURNS bytea LANGUAGE plpgsql STABLE
    AS $$ BEGIN RETURN audience_consent_link(coalesce(state, head), entry); END $$
    """,
    # audience_consent_chain(head, entry) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING): each row's chain hash.
    "CREATE AGGREGATE audience_consent_chain(bytea, text) (SFUNC = audience_consent_chain_step, STYPE = bytea)",
]

DROP_FUNCTIONS = [
    "DROP AGGREGATE IF EXISTS audience_consent_chain(bytea, text)",
    "DROP FUNCTION IF EXISTS audience_consent_chain_step(bytea, bytea, text)",
    "DROP FUNCTION IF EXISTS audience_consent_link(bytea, text)",
    "DROP FUNCTION IF EXISTS audience_consent_entry(bigint, bigint, text, timestamptz, text, text, text, text, bytea)",
    "DROP FUNCTION IF EXISTS audience_consent_personal_digest(bigint, text, jsonb)",
]

# The lock of audience.consent_chain.LOCK_KEY, so that no writer appends while the chain is made.
CHAIN_EXISTING = [
    "SELECT pg_advisory_xact_lock(-2999580041397565707)",
    r"""
WITH numbered AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY created_at, id) AS seq,
           audience_consent_personal_digest(contact_id, phone_hash, evidence) AS personal_digest
    FROM audience_consentevent
), chained AS (
    SELECT n.id, n.seq, n.personal_digest,
           audience_consent_chain('\x0000000000000000000000000000000000000000000000000000000000000000'::bytea,
               audience_consent_entry(n.seq, n.id, e.kind, e.created_at, e.from_status, e.to_status, e.source,
                                      e.actor, n.personal_digest)) OVER (ORDER BY n.seq ROWS UNBOUNDED PRECEDING)
               AS chain_hash
    FROM numbered n JOIN audience_consentevent e ON e.id = n.id
)
UPDATE audience_consentevent e SET seq = c.seq, personal_digest = c.personal_digest, chain_hash = c.chain_hash
FROM chained c WHERE e.id = c.id
""",
]


class Migration(migrations.Migration):
    dependencies = [
        ("audience", "0014_consentevent_kind"),
    ]

    operations = [
        migrations.RunSQL(FUNCTIONS, DROP_FUNCTIONS),
        migrations.AlterField(
            model_name="consentevent",
            name="kind",
            field=models.CharField(
                choices=[
                    ("change", "Consent change"),
                    ("suppression_lifted", "Suppression lifted"),
                    ("erasure", "Personal data erased"),
                ],
                db_default="change",
                max_length=24,
            ),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="source",
            field=models.CharField(
                blank=True,
                choices=[
                    ("import", "Import"),
                    ("api", "API"),
                    ("admin", "Admin"),
                    ("keyword", "Keyword"),
                    ("provider", "Provider"),
                ],
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="consentevent",
            name="seq",
            field=models.BigIntegerField(null=True, editable=False, verbose_name="position"),
        ),
        migrations.AddField(
            model_name="consentevent",
            name="personal_digest",
            field=models.BinaryField(null=True, editable=False, max_length=32),
        ),
        migrations.AddField(
            model_name="consentevent",
            name="chain_hash",
            field=models.BinaryField(null=True, editable=False, max_length=32),
        ),
        migrations.RunSQL(CHAIN_EXISTING, migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="consentevent",
            name="seq",
            field=models.BigIntegerField(
                editable=False, help_text="Position in the audit chain.", unique=True, verbose_name="position"
            ),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="personal_digest",
            field=models.BinaryField(
                editable=False, help_text="SHA-256 of contact, phone hash and evidence as written.", max_length=32
            ),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="chain_hash",
            field=models.BinaryField(
                editable=False,
                help_text="SHA-256 of the previous event's chain hash and this entry.",
                max_length=32,
            ),
        ),
    ]
