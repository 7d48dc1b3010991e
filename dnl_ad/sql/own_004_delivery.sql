-- Server-wide SMTP trouble (unreachable, 421, rate limit): delivery through that server
-- pauses until next_try_at, and no notice is charged an attempt for it. One row per
-- server key (host:port:user) while it is in trouble; deleted when it answers again.
CREATE TABLE smtp_backoff (
    server text PRIMARY KEY,
    failures integer NOT NULL,
    since timestamptz NOT NULL,
    next_try_at timestamptz NOT NULL,
    last_error text
);

-- Each claim writes its own token: a deliverer records outcomes (and releases rows) only
-- for rows that still carry its token, so a deliverer whose lease ran out and whose rows
-- another has claimed since can never mark them a second time.
ALTER TABLE outbox ADD COLUMN claim_token text;

-- The mail_sender id whose address is the notice's From (NULL: system_parameter's or the
-- ini's sender). Delivery resolves it to that sender's own SMTP server when it has one.
ALTER TABLE outbox ADD COLUMN sender_id text;
