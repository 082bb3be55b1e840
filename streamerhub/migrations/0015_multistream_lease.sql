-- 0015: Which daemon runs the multistream jobs when several share this database: one lease,
-- renewed by its holder; any daemon may take it once it lapses. generation counts the changes of
-- holder (a fencing token: the log says which generation each start and stop happened under).

CREATE TABLE multistream_leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    generation  bigint NOT NULL DEFAULT 1,
    lease_until timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
