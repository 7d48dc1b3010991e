-- Operator alerts (dnl_ad.operator_alerts): one row per condition that failed at some
-- point (a job, delivery giving notices up, a suspension not written). It survives a
-- restart or a take-over, so the operator is told once when a condition starts, once
-- when it recovers, and never more than once an hour that it fails.
CREATE TABLE operator_condition (
    condition text PRIMARY KEY,
    -- when the current failure began; NULL while the condition is fine
    failing_since timestamptz,
    last_error text,
    -- the operator was told it fails and not yet that it recovered
    alerted boolean NOT NULL DEFAULT false,
    -- the last "failing" mail (at most one an hour per condition)
    last_alert_at timestamptz
);
-- Notices delivery gave up (failed for good), found by when they ended.
CREATE INDEX outbox_given_up ON outbox (finished_at) WHERE status = 'failed';
