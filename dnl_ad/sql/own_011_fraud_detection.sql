-- Fraud rules (alert fraud_detection): one open breach per rule, ingress trunk and window
-- ('hour' = the last 60 minutes, 'day' = the last 24 hours) until it clears. It holds the
-- dedupe key's start, the provider log row written, and the block dnl_ad created (if any).
CREATE TABLE fraud_breach (
    rule_id integer NOT NULL,
    resource_id integer NOT NULL,
    window_name text NOT NULL CHECK (window_name IN ('hour', 'day')),
    opened_at timestamptz NOT NULL,
    log_id integer,
    block_types integer[] NOT NULL,
    res_block_id integer,
    PRIMARY KEY (rule_id, resource_id, window_name)
);
