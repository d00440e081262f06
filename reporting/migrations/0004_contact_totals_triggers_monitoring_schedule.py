"""Contact totals kept by triggers on audience_contact, and the beat task that refreshes monitoring probes.

Statement-level triggers with transition tables see every write, the ingest engine's COPY-fed
upserts included, and append one delta row per statement (no row every writer must lock).
The initial row holds the totals of the contacts present when the migration runs.
"""

from django.db import migrations

TRIGGERS_SQL = """
CREATE FUNCTION reporting_contact_totals_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reporting_contacttotal (contacts, opted_out)
    SELECT count(*), count(*) FILTER (WHERE consent_status = 'opted_out') FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE FUNCTION reporting_contact_totals_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reporting_contacttotal (contacts, opted_out)
    SELECT -count(*), -count(*) FILTER (WHERE consent_status = 'opted_out') FROM old_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE FUNCTION reporting_contact_totals_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reporting_contacttotal (contacts, opted_out)
    SELECT 0, d FROM (
        SELECT (SELECT count(*) FROM new_rows WHERE consent_status = 'opted_out')
             - (SELECT count(*) FROM old_rows WHERE consent_status = 'opted_out') AS d
    ) AS x WHERE d <> 0;
    RETURN NULL;
END $$;
CREATE TRIGGER reporting_contact_totals_ins AFTER INSERT ON audience_contact
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reporting_contact_totals_ins();
CREATE TRIGGER reporting_contact_totals_del AFTER DELETE ON audience_contact
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION reporting_contact_totals_del();
CREATE TRIGGER reporting_contact_totals_upd AFTER UPDATE ON audience_contact
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reporting_contact_totals_upd();
DELETE FROM reporting_contacttotal;
INSERT INTO reporting_contacttotal (contacts, opted_out)
    SELECT count(*), count(*) FILTER (WHERE consent_status = 'opted_out') FROM audience_contact;
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS reporting_contact_totals_ins ON audience_contact;
DROP TRIGGER IF EXISTS reporting_contact_totals_del ON audience_contact;
DROP TRIGGER IF EXISTS reporting_contact_totals_upd ON audience_contact;
DROP FUNCTION IF EXISTS reporting_contact_totals_ins();
DROP FUNCTION IF EXISTS reporting_contact_totals_del();
DROP FUNCTION IF EXISTS reporting_contact_totals_upd();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0003_delivery_timeline_engagement_counters"),
        ("audience", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunSQL(TRIGGERS_SQL, DROP_SQL),
    ]
