-- 0006: Conduit mode. The installation's one EventSub conduit per Twitch application (its id
-- survives restarts, so subscriptions on it are adopted rather than recreated), and which daemon
-- holds each of its shards: a lease renewed by the holder, free for any daemon once it lapses.

CREATE TABLE twitch_conduits (
    client_id  text PRIMARY KEY,
    conduit_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE twitch_conduit_shards (
    client_id   text NOT NULL REFERENCES twitch_conduits (client_id) ON DELETE CASCADE,
    shard_id    integer NOT NULL CHECK (shard_id >= 0),
    daemon_id   text NOT NULL,
    session_id  text,
    status      text NOT NULL,
    lease_until timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, shard_id)
);
