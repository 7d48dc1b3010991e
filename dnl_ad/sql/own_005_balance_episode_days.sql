-- Low-balance repeats follow the v5 settings: daily at daily_send_time GMT or hourly, until
-- duplicate_days *days* have had a notice. `days` counts the UTC days with a notice in the
-- episode (what client_low_balance_config.duplicate_send_days shows the UI), `last_day` is
-- the last of them. An episode adopted from the original daemon (take-over) starts with
-- the provider's counters instead of 1.
ALTER TABLE balance_episode ADD COLUMN days integer NOT NULL DEFAULT 1;
ALTER TABLE balance_episode ADD COLUMN last_day date;
ALTER TABLE balance_episode ADD COLUMN adopted boolean NOT NULL DEFAULT false;
ALTER TABLE balance_episode DROP CONSTRAINT balance_episode_notices_check;
ALTER TABLE balance_episode ADD CONSTRAINT balance_episode_notices_check CHECK (notices >= 0);
