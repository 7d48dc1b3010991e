-- Daily reports decided "nothing to send" (no traffic, auto_summary_not_zero, no trunk
-- with calls): recorded so that a restart neither reads the period again nor logs it,
-- once too old, as a report that was missed. Same key as the report's outbox row.
CREATE TABLE report_quiet (
    dedupe_key text PRIMARY KEY,
    decided_at timestamptz NOT NULL
);
