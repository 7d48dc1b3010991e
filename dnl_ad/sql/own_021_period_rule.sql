-- Period-over-period rules (CDR-Stats style alarms; v5 has no such table), managed with
-- `dnl-ad rule add|list|remove`. A rule compares a metric (ASR or ACD) over a settled
-- period (day, week, month; UTC) of a scope of traffic with a fixed value or with the
-- period before it (or the same period a week earlier).
CREATE TABLE period_rule (
    id serial PRIMARY KEY,
    name text NOT NULL,
    metric text NOT NULL CHECK (metric IN ('asr', 'acd')),
    scope text NOT NULL DEFAULT 'all'
        CHECK (scope IN ('all', 'client', 'trunk', 'code_name', 'country')),
    scope_value text NOT NULL DEFAULT '',
    -- which leg's attempts: 1 ingress (traffic a client sends us), 2 egress
    side smallint NOT NULL DEFAULT 1 CHECK (side IN (1, 2)),
    period text NOT NULL CHECK (period IN ('day', 'week', 'month')),
    condition text NOT NULL CHECK (condition IN ('lt', 'gt', 'falls_by', 'rises_by',
                                                 'falls_by_pct', 'rises_by_pct')),
    value numeric NOT NULL,
    compare_to text NOT NULL DEFAULT 'previous'
        CHECK (compare_to IN ('previous', 'week_before')),
    min_calls integer NOT NULL DEFAULT 0 CHECK (min_calls >= 0),
    recipients text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per rule and settled period once evaluated: a period is judged once.
CREATE TABLE period_rule_run (
    rule_id integer NOT NULL REFERENCES period_rule (id) ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    evaluated_at timestamptz NOT NULL,
    fired boolean NOT NULL,
    PRIMARY KEY (rule_id, period_start)
);
