-- Destination watch lists (CDR-Stats' blacklist / whitelist), managed with
-- `dnl-ad watch add|list|remove`: prefixes or countries a client (client_id) or every
-- client (client_id NULL) must not call (black), or the only ones it may call (white).
CREATE TABLE watch_entry (
    id serial PRIMARY KEY,
    list text NOT NULL CHECK (list IN ('black', 'white')),
    client_id integer,
    kind text NOT NULL CHECK (kind IN ('prefix', 'country')),
    value text NOT NULL CHECK (value <> ''),
    -- the client's NOC gets the alert too (the operator's always does)
    notify_client boolean NOT NULL DEFAULT false,
    note text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX watch_entry_once ON watch_entry (list, coalesce(client_id, 0), kind,
                                                     lower(value));
