-- Disable ingress trunks after N days of low balance (alert low_balance_disable).
-- low_balance_disable: the low-balance episode (balance_episode.started_at) whose trunks
-- dnl_ad deactivated, one row per client; low_balance_disabled_trunk: exactly the trunks
-- it deactivated, so that re-activation touches only those, and the modif_log row of each
-- (marked rolled back when dnl_ad re-activates the trunk, so the UI offers no rollback).
CREATE TABLE low_balance_disable (
    client_id integer PRIMARY KEY,
    episode_start timestamptz NOT NULL,
    disabled_at timestamptz NOT NULL
);

CREATE TABLE low_balance_disabled_trunk (
    client_id integer NOT NULL,
    resource_id integer NOT NULL,
    modif_log_id integer,
    PRIMARY KEY (client_id, resource_id)
);
