-- The transactional outbox: one row per notice, rendered once when queued.
-- The alert sweep inserts it in the same transaction as its provider state writes;
-- the delivery step sends it. dedupe_key makes "queued once" a database property.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    dedupe_key text NOT NULL UNIQUE,
    kind text NOT NULL,
    client_id integer,
    resource_id integer,
    email_type smallint NOT NULL,
    alert_rule text NOT NULL DEFAULT '',
    from_addr text NOT NULL,
    to_addrs text[] NOT NULL,
    cc_addrs text[] NOT NULL DEFAULT '{}',
    -- recipients that accepted the message: never sent to again on a retry
    done_addrs text[] NOT NULL DEFAULT '{}',
    -- recipients refused for good (5xx)
    failed_addrs text[] NOT NULL DEFAULT '{}',
    -- billing_email pieces dropped as invalid when the notice was built
    rejected_addrs text[] NOT NULL DEFAULT '{}',
    subject text NOT NULL,
    text_body text NOT NULL,
    html_body text NOT NULL,
    -- the exact RFC 5322 bytes sent (and re-sent on retry), built when queued
    message bytea NOT NULL,
    message_id text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- a delivery run that claimed the row holds it until then; a run that dies mid-batch
    -- leaves the lease to expire and the row is claimed again (never stranded)
    lease_until timestamptz,
    last_attempt_at timestamptz,
    last_error text,
    created_at timestamptz NOT NULL,
    finished_at timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_client ON outbox (client_id, kind);
