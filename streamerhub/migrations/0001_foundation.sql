-- 0001: Twitch capture. Every notification is kept raw in twitch_events; the typed twitch_*
-- tables can always be rebuilt from it (see streamerhub/events/normalise.py).

CREATE TABLE twitch_channels (
    channel_id          text PRIMARY KEY,            -- Twitch broadcaster user id
    login               text NOT NULL,
    display_name        text NOT NULL,
    scopes              text[] NOT NULL DEFAULT '{}',
    access_token_sealed bytea,                       -- crypto.py, aad "twitch_channels:<id>:access"
    refresh_token_sealed bytea,
    token_expires_at    timestamptz,
    status              text NOT NULL DEFAULT 'connected'
                        CHECK (status IN ('connected', 'disconnected')),
    status_reason       text,
    connected_at        timestamptz NOT NULL DEFAULT now(),
    validated_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Raw, lossless record of every notification (and of backfilled events, message_id 'backfill:…').
CREATE TABLE twitch_events (
    message_id           text PRIMARY KEY,
    subscription_type    text NOT NULL,
    subscription_version text NOT NULL,
    channel_id           text NOT NULL,
    occurred_at          timestamptz NOT NULL,       -- metadata.message_timestamp
    received_at          timestamptz NOT NULL DEFAULT now(),
    event_key            text,                       -- the event's own identity, when it has one
    backfilled           boolean NOT NULL DEFAULT false,
    payload              jsonb NOT NULL              -- {"subscription": …, "event": …}
);
CREATE INDEX twitch_events_channel_time ON twitch_events (channel_id, occurred_at DESC);
CREATE INDEX twitch_events_type_time ON twitch_events (subscription_type, occurred_at DESC);
-- The same occurrence delivered twice under two message ids (a stale session still subscribed).
CREATE UNIQUE INDEX twitch_events_event_key ON twitch_events (subscription_type, channel_id, event_key)
    WHERE event_key IS NOT NULL;

CREATE TABLE twitch_follows (
    message_id  text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id  text NOT NULL,
    user_id     text NOT NULL,
    user_login  text NOT NULL,
    user_name   text NOT NULL,
    followed_at timestamptz NOT NULL,
    backfilled  boolean NOT NULL DEFAULT false
);
CREATE INDEX twitch_follows_channel_time ON twitch_follows (channel_id, followed_at);

-- subscribe, subscription.message (resub), subscription.gift and subscription.end in one table.
CREATE TABLE twitch_subscriptions (
    message_id        text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id        text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('sub', 'resub', 'gift', 'end')),
    user_id           text,                          -- null for anonymous gifts
    user_login        text,
    user_name         text,
    tier              text NOT NULL,
    is_gift           boolean NOT NULL DEFAULT false,
    is_anonymous      boolean NOT NULL DEFAULT false,
    gift_total        integer,                       -- gift: subs in this gift
    cumulative_total  integer,                       -- gift: gifter's all-time total, if shared
    cumulative_months integer,
    streak_months     integer,
    duration_months   integer,
    message           text,
    occurred_at       timestamptz NOT NULL
);
CREATE INDEX twitch_subscriptions_channel_time ON twitch_subscriptions (channel_id, occurred_at);

CREATE TABLE twitch_cheers (
    message_id   text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id   text NOT NULL,
    user_id      text,
    user_login   text,
    user_name    text,
    is_anonymous boolean NOT NULL DEFAULT false,
    bits         integer NOT NULL,
    message      text,
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX twitch_cheers_channel_time ON twitch_cheers (channel_id, occurred_at);

-- stream.online / stream.offline
CREATE TABLE twitch_streams (
    message_id  text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id  text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('online', 'offline')),
    stream_id   text,
    stream_type text,
    started_at  timestamptz,
    occurred_at timestamptz NOT NULL,
    reconciled  boolean NOT NULL DEFAULT false       -- inferred from GET /streams after a gap
);
CREATE INDEX twitch_streams_channel_time ON twitch_streams (channel_id, occurred_at);

CREATE TABLE twitch_raids (
    message_id          text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id          text NOT NULL,               -- the channel whose subscription saw it
    from_user_id        text NOT NULL,
    from_user_login     text NOT NULL,
    from_user_name      text NOT NULL,
    to_user_id          text NOT NULL,
    to_user_login       text NOT NULL,
    to_user_name        text NOT NULL,
    viewers             integer NOT NULL,
    occurred_at         timestamptz NOT NULL
);
CREATE INDEX twitch_raids_channel_time ON twitch_raids (channel_id, occurred_at);

CREATE TABLE twitch_redemptions (
    message_id    text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id    text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('add', 'update')),
    redemption_id text NOT NULL,
    user_id       text NOT NULL,
    user_login    text NOT NULL,
    user_name     text NOT NULL,
    user_input    text,
    status        text NOT NULL,
    reward_id     text NOT NULL,
    reward_title  text NOT NULL,
    reward_cost   integer NOT NULL,
    reward_prompt text,
    redeemed_at   timestamptz NOT NULL
);
CREATE INDEX twitch_redemptions_channel_time ON twitch_redemptions (channel_id, redeemed_at);

CREATE TABLE twitch_channel_updates (
    message_id    text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id    text NOT NULL,
    title         text NOT NULL,
    language      text,
    category_id   text,
    category_name text,
    content_classification_labels jsonb NOT NULL DEFAULT '[]',
    occurred_at   timestamptz NOT NULL
);
CREATE INDEX twitch_channel_updates_channel_time ON twitch_channel_updates (channel_id, occurred_at);

-- Hype trains, polls, predictions and goals: every begin/progress/end is kept (they share an id).
CREATE TABLE twitch_hype_trains (
    message_id  text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id  text NOT NULL,
    phase       text NOT NULL CHECK (phase IN ('begin', 'progress', 'end')),
    train_id    text NOT NULL,
    train_type  text,                                -- v2: regular, golden_kappa, treasure
    is_shared_train boolean,                         -- v2: a train shared by several channels
    level       integer,
    total       integer,
    progress    integer,
    goal        integer,
    started_at  timestamptz,
    ended_at    timestamptz,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX twitch_hype_trains_channel_time ON twitch_hype_trains (channel_id, occurred_at);

CREATE TABLE twitch_polls (
    message_id  text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id  text NOT NULL,
    phase       text NOT NULL CHECK (phase IN ('begin', 'progress', 'end')),
    poll_id     text NOT NULL,
    title       text NOT NULL,
    status      text,
    choices     jsonb NOT NULL DEFAULT '[]',
    started_at  timestamptz,
    ended_at    timestamptz,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX twitch_polls_channel_time ON twitch_polls (channel_id, occurred_at);

CREATE TABLE twitch_predictions (
    message_id         text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id         text NOT NULL,
    phase              text NOT NULL CHECK (phase IN ('begin', 'progress', 'lock', 'end')),
    prediction_id      text NOT NULL,
    title              text NOT NULL,
    status             text,
    winning_outcome_id text,
    outcomes           jsonb NOT NULL DEFAULT '[]',
    started_at         timestamptz,
    occurred_at        timestamptz NOT NULL
);
CREATE INDEX twitch_predictions_channel_time ON twitch_predictions (channel_id, occurred_at);

CREATE TABLE twitch_goals (
    message_id     text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id     text NOT NULL,
    phase          text NOT NULL CHECK (phase IN ('begin', 'progress', 'end')),
    goal_id        text NOT NULL,
    goal_type      text NOT NULL,
    description    text,
    current_amount integer,
    target_amount  integer,
    is_achieved    boolean,
    started_at     timestamptz,
    ended_at       timestamptz,
    occurred_at    timestamptz NOT NULL
);
CREATE INDEX twitch_goals_channel_time ON twitch_goals (channel_id, occurred_at);

-- What the EventSub client asked for and what Twitch answered, per channel and type.
CREATE TABLE eventsub_subscriptions (
    channel_id        text NOT NULL REFERENCES twitch_channels ON DELETE CASCADE,
    subscription_type text NOT NULL,
    version           text NOT NULL,
    status            text NOT NULL,                 -- enabled, missing_scope, revoked:<reason>, error
    twitch_id         text,
    detail            text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, subscription_type, version)
);

-- Every transport gap: from the moment a connection was lost to the moment subscriptions were back.
CREATE TABLE eventsub_gaps (
    id            bigserial PRIMARY KEY,
    channel_id    text NOT NULL,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    reason        text NOT NULL,
    backfilled_at timestamptz,
    backfilled    integer NOT NULL DEFAULT 0
);
CREATE INDEX eventsub_gaps_channel_time ON eventsub_gaps (channel_id, started_at DESC);

-- Frames we could not understand: kept with their raw text so nothing is silently dropped.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    letter_key  text UNIQUE,                         -- set by the writer: a spool replay stores it once
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL,                       -- eventsub, spool, …
    reason      text NOT NULL,
    raw         text NOT NULL
);
CREATE INDEX dead_letters_time ON dead_letters (received_at DESC);
