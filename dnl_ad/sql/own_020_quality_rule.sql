-- Quality rules (v5 alert_rules): one open episode per (rule, trunk, group) while the
-- group breaks the rule. Its mail goes once when it opens; it reopens (a new mail, a new
-- block) only after it cleared (the group no longer matched at a run of the rule: the
-- row is deleted) or when renew_at (opened_at + unblock_after_min) has passed.
CREATE TABLE quality_episode (
    rule_id integer NOT NULL,
    resource_id integer NOT NULL,
    group_key text NOT NULL DEFAULT '',
    opened_at timestamptz NOT NULL,
    renew_at timestamptz,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (rule_id, resource_id, group_key)
);

-- Exactly the resource_block rows dnl_ad wrote for a quality rule: the unblock deletes
-- these (by res_block_id) and never an operator's own block.
CREATE TABLE quality_block (
    res_block_id integer PRIMARY KEY,
    rule_id integer NOT NULL,
    resource_id integer NOT NULL,
    group_key text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    unblock_at timestamptz
);
CREATE INDEX quality_block_due ON quality_block (unblock_at) WHERE unblock_at IS NOT NULL;
