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
