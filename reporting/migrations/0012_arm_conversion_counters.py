"""Converted recipients and their revenue per experiment arm, kept by triggers on campaigns_conversion.

Statement-level triggers with transition tables see every write to the conversion rows (attribution's
bulk insert, a deletion cascading from a campaign or a contact, any update) and move the counters of
the arms whose recipients changed, in the same transaction. Each recipient's figures are recomputed
from its conversion rows after the arms' counter rows are locked, so two transactions converting
recipients of one arm at once each see what the other committed, and a recipient counts once however
many conversions it has. The initial rows count the conversions present when the migration runs.
"""

from django.db import migrations, models

TRIGGERS_SQL = """
CREATE FUNCTION reporting_arm_conversions_apply(p_recipients bigint[], p_runs bigint[], p_n bigint[], p_v numeric[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- Lock the arms' rows first (created if new, in one order): whoever changes the same arms waits
    -- here, and the next statement, a new snapshot, sees what they committed.
    INSERT INTO reporting_armconversioncounter (run_id, arm, rollout, converters, revenue, revenue_sq)
    SELECT DISTINCT x.run_id, r.arm, r.rollout, 0, 0, 0
    FROM unnest(p_recipients, p_runs) AS x(recipient_id, run_id)
    JOIN campaigns_recipient r ON r.id = x.recipient_id
    WHERE r.arm IS NOT NULL
    ORDER BY 1, 2, 3
    ON CONFLICT (run_id, arm, rollout) DO UPDATE SET converters = reporting_armconversioncounter.converters;

    WITH changed AS (
        SELECT recipient_id, run_id, sum(n) AS n, sum(v) AS v
        FROM unnest(p_recipients, p_runs, p_n, p_v) AS x(recipient_id, run_id, n, v)
        GROUP BY recipient_id, run_id
    ), state AS (
        SELECT ch.recipient_id, ch.run_id, ch.n, ch.v, now_.n_all, now_.v_all
        FROM changed ch CROSS JOIN LATERAL (
            SELECT count(*) AS n_all, COALESCE(sum(c.value), 0) AS v_all FROM campaigns_conversion c
            WHERE c.recipient_id = ch.recipient_id AND c.run_id = ch.run_id
        ) now_
    ), moved AS (
        SELECT s.run_id, r.arm, r.rollout,
               sum((s.n_all > 0)::int - (s.n_all - s.n > 0)::int) AS converters,
               sum(s.v) AS revenue,
               sum(s.v_all * s.v_all - (s.v_all - s.v) * (s.v_all - s.v)) AS revenue_sq
        FROM state s JOIN campaigns_recipient r ON r.id = s.recipient_id
        WHERE r.arm IS NOT NULL
        GROUP BY s.run_id, r.arm, r.rollout
    )
    UPDATE reporting_armconversioncounter k
    SET converters = k.converters + m.converters, revenue = k.revenue + m.revenue,
        revenue_sq = k.revenue_sq + m.revenue_sq
    FROM moved m WHERE k.run_id = m.run_id AND k.arm = m.arm AND k.rollout = m.rollout;
END $$;

CREATE FUNCTION reporting_arm_conversions_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM reporting_arm_conversions_apply(
        array_agg(recipient_id), array_agg(run_id), array_agg(1::bigint), array_agg(COALESCE(value, 0)))
    FROM new_rows WHERE recipient_id IS NOT NULL HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE FUNCTION reporting_arm_conversions_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM reporting_arm_conversions_apply(
        array_agg(recipient_id), array_agg(run_id), array_agg(-1::bigint), array_agg(-COALESCE(value, 0)))
    FROM old_rows WHERE recipient_id IS NOT NULL HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE FUNCTION reporting_arm_conversions_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM reporting_arm_conversions_apply(array_agg(recipient_id), array_agg(run_id), array_agg(n), array_agg(v))
    FROM (
        SELECT recipient_id, run_id, 1::bigint AS n, COALESCE(value, 0) AS v FROM new_rows
        UNION ALL
        SELECT recipient_id, run_id, -1::bigint, -COALESCE(value, 0) FROM old_rows
    ) AS x WHERE recipient_id IS NOT NULL HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE TRIGGER reporting_arm_conversions_ins AFTER INSERT ON campaigns_conversion
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reporting_arm_conversions_ins();
CREATE TRIGGER reporting_arm_conversions_del AFTER DELETE ON campaigns_conversion
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION reporting_arm_conversions_del();
CREATE TRIGGER reporting_arm_conversions_upd AFTER UPDATE ON campaigns_conversion
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reporting_arm_conversions_upd();
INSERT INTO reporting_armconversioncounter (run_id, arm, rollout, converters, revenue, revenue_sq)
SELECT per.run_id, r.arm, r.rollout, count(*), sum(per.value), sum(per.value * per.value)
FROM (
    SELECT c.run_id, c.recipient_id, COALESCE(sum(c.value), 0) AS value FROM campaigns_conversion c
    WHERE c.recipient_id IS NOT NULL GROUP BY c.run_id, c.recipient_id
) per
JOIN campaigns_recipient r ON r.id = per.recipient_id
WHERE r.arm IS NOT NULL
GROUP BY per.run_id, r.arm, r.rollout;
"""

DROP_SQL = """
DROP TRIGGER reporting_arm_conversions_ins ON campaigns_conversion;
DROP TRIGGER reporting_arm_conversions_del ON campaigns_conversion;
DROP TRIGGER reporting_arm_conversions_upd ON campaigns_conversion;
DROP FUNCTION reporting_arm_conversions_ins();
DROP FUNCTION reporting_arm_conversions_del();
DROP FUNCTION reporting_arm_conversions_upd();
DROP FUNCTION reporting_arm_conversions_apply(bigint[], bigint[], bigint[], numeric[]);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0011_armcounter_cost"),
        ("campaigns", "0013_experiments"),
    ]

    operations = [
        migrations.CreateModel(
            name="ArmConversionCounter",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("run_id", models.BigIntegerField()),
                ("arm", models.BigIntegerField()),
                ("rollout", models.BooleanField(default=False)),
                ("converters", models.BigIntegerField(default=0)),
                ("revenue", models.DecimalField(decimal_places=4, default=0, max_digits=30)),
                ("revenue_sq", models.DecimalField(decimal_places=8, default=0, max_digits=60)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("run_id", "arm", "rollout"), name="armconversioncounter_once")
                ],
            },
        ),
        migrations.RunSQL(TRIGGERS_SQL, DROP_SQL),
    ]
