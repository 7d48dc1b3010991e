-- Usage-limit ladder (alert usage_limit). Never in `client`: every write there adds
-- client_record rows on a v5 switch.
--
-- usage_limit_state: one row per client, period ('day' = the client's local day, 'hour' =
-- the clock hour) and period start, written when a step is reached (or, with carry-over,
-- at the first sweep of the day, to fix the day's limit). `step` is the highest step
-- notified in the period: the guard that sends each step once, across restarts and
-- daemons. `limit_value` is the period's limit (base + carried, capped at 2x base).
CREATE TABLE usage_limit_state (
    client_id integer NOT NULL,
    period text NOT NULL CHECK (period IN ('day', 'hour')),
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    base_limit numeric NOT NULL,
    carried numeric NOT NULL DEFAULT 0,
    limit_value numeric NOT NULL,
    step integer NOT NULL DEFAULT 0,
    usage numeric,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, period, period_start)
);
CREATE INDEX usage_limit_state_end ON usage_limit_state (period_end);

-- Exactly the resource_block rows dnl_ad created at 100 %: the unblock deletes these and
-- nothing else (never an operator's own block on the same trunk).
CREATE TABLE usage_limit_block (
    res_block_id integer PRIMARY KEY,
    client_id integer NOT NULL,
    resource_id integer NOT NULL,
    period text NOT NULL,
    period_start timestamptz NOT NULL,
    unblock_at timestamptz NOT NULL,
    blocked_at timestamptz NOT NULL
);
CREATE INDEX usage_limit_block_due ON usage_limit_block (unblock_at);

-- Per-client carry-over, overriding USAGE_LIMIT_CARRY_OVER (no row: the setting).
CREATE TABLE usage_limit_client (
    client_id integer PRIMARY KEY,
    carry_over boolean NOT NULL
);
