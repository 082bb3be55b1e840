-- 0014: The Twitch application's credentials entered on the dashboard (issue 16: connecting Twitch
-- entirely in the browser). One row at most. [twitch] client_id / client_secret in config.toml or
-- the environment win over it; the secret is sealed like every other (keys.reseal covers it by
-- its *_sealed name).

CREATE TABLE twitch_app (
    id                    smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    client_id             text NOT NULL,
    client_secret_sealed  bytea NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
