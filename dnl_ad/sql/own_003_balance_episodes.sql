-- Open low/zero-balance episodes, one row per (kind, client) while the condition holds.
-- The provider columns (last_lowbalance_time, zero_balance_notice_time, ...) mirror this
-- for the UI; this table is what the sweep decides on: the episode start names the
-- dedupe keys, `notices` counts what the episode has sent, and `next_due_at` (the next
-- local midnight in the client's zone, computed when a notice is queued) lets the sweep
-- query skip clients already told today without any zone arithmetic in SQL.
CREATE TABLE balance_episode (
    kind text NOT NULL CHECK (kind IN ('low_balance', 'zero_balance')),
    client_id integer NOT NULL,
    started_at timestamptz NOT NULL,
    notices integer NOT NULL CHECK (notices >= 1),
    last_sent_at timestamptz NOT NULL,
    next_due_at timestamptz NOT NULL,
    PRIMARY KEY (kind, client_id)
);
