"""Per-arm counters of experiment campaigns, kept in the same statement as the other counters.

``ARM_COUNTER_CTE`` joins in ``reporting.counters``' sync statement: each changed counted message
(``up``, with its previous state) moves its recipient's arm row by the difference, so the arm
counters equal a recount exactly like the others. A recipient's arm is fixed before its message
exists, so a message never changes arm. ``ARM_RECOUNT_SQL`` rebuilds them from the counted rows.
Clicks, conversions, revenue and cost per arm come from their own counters, merged by
``reporting.arms`` (its ``ARM_FIGURE_SOURCES``).
"""

ARM_COUNTER_CTE = """
ar AS (
    INSERT INTO reporting_armcounter AS k
        (run_id, campaign_id, arm, rollout, sent, delivered, read, failed, repliers, replies, opt_outs_72h, cost)
    SELECT up.run_id, up.campaign_id, r.arm, r.rollout,
           sum((up.sent_minute IS NOT NULL)::int - (up.prev_sent_minute IS NOT NULL)::int),
           sum((up.delivered_minute IS NOT NULL)::int - (up.prev_delivered_minute IS NOT NULL)::int),
           sum((up.read_minute IS NOT NULL)::int - (up.prev_read_minute IS NOT NULL)::int),
           sum((up.failed_minute IS NOT NULL)::int - (up.prev_failed_minute IS NOT NULL)::int),
           sum((up.replies > 0)::int - (up.prev_replies > 0)::int),
           sum(up.replies - up.prev_replies),
           sum(up.opted_out_72h - up.prev_opted_out_72h),
           sum(abs(COALESCE(up.price, 0)) - abs(COALESCE(up.prev_price, 0)))
    FROM up JOIN campaigns_recipient r ON r.message_id = up.message_id
    WHERE up.run_id IS NOT NULL AND r.arm IS NOT NULL
    GROUP BY up.run_id, up.campaign_id, r.arm, r.rollout
    ORDER BY 1, 3, 4
    ON CONFLICT (run_id, arm, rollout) DO UPDATE SET
        sent = k.sent + EXCLUDED.sent, delivered = k.delivered + EXCLUDED.delivered,
        read = k.read + EXCLUDED.read, failed = k.failed + EXCLUDED.failed,
        repliers = k.repliers + EXCLUDED.repliers, replies = k.replies + EXCLUDED.replies,
        opt_outs_72h = k.opt_outs_72h + EXCLUDED.opt_outs_72h, cost = k.cost + EXCLUDED.cost
)
"""

# ``{where}`` filters reporting_countedmessage (unqualified columns), as counters._aggregate_run_counters.
ARM_RECOUNT_SQL = """
INSERT INTO reporting_armcounter
    (run_id, campaign_id, arm, rollout, sent, delivered, read, failed, repliers, replies, opt_outs_72h, cost)
SELECT c.run_id, c.campaign_id, r.arm, r.rollout, count(c.sent_minute), count(c.delivered_minute),
       count(c.read_minute), count(c.failed_minute), count(*) FILTER (WHERE c.replies > 0), sum(c.replies),
       sum(c.opted_out_72h), sum(abs(COALESCE(c.price, 0)))
FROM (SELECT * FROM reporting_countedmessage WHERE run_id IS NOT NULL {where}) AS c
JOIN campaigns_recipient r ON r.message_id = c.message_id
WHERE r.arm IS NOT NULL
GROUP BY c.run_id, c.campaign_id, r.arm, r.rollout
"""
