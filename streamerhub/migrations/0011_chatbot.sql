-- 0011: the chat bot (chatbot/): its settings per channel, commands, timers, event messages and
-- the log of every message it sent or skipped, with why.

CREATE TABLE chatbot_settings (
    channel_id text PRIMARY KEY,
    enabled boolean NOT NULL DEFAULT false,  -- off until the owner turns it on
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chatbot_commands (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_]{1,32}$'),
    response text NOT NULL CHECK (length(response) BETWEEN 1 AND 500),
    permission text NOT NULL DEFAULT 'everyone'
        CHECK (permission IN ('everyone', 'subscriber', 'vip', 'moderator', 'broadcaster')),
    cooldown_s integer NOT NULL DEFAULT 5 CHECK (cooldown_s >= 0),
    user_cooldown_s integer NOT NULL DEFAULT 15 CHECK (user_cooldown_s >= 0),
    aliases text[] NOT NULL DEFAULT '{}',
    enabled boolean NOT NULL DEFAULT true,
    uses bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chatbot_timers (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    message text NOT NULL CHECK (length(message) BETWEEN 1 AND 500),
    interval_min integer NOT NULL CHECK (interval_min >= 1),
    min_chat_messages integer NOT NULL DEFAULT 5 CHECK (min_chat_messages >= 0),
    enabled boolean NOT NULL DEFAULT true
);

CREATE TABLE chatbot_event_messages (
    kind text PRIMARY KEY
        CHECK (kind IN ('follow', 'sub', 'resub', 'gift', 'cheer', 'raid', 'hype_train',
                        'redemption')),
    template text NOT NULL CHECK (length(template) BETWEEN 1 AND 500),
    enabled boolean NOT NULL DEFAULT true,
    minimum integer NOT NULL DEFAULT 0 CHECK (minimum >= 0),
    per_minute integer NOT NULL DEFAULT 6 CHECK (per_minute >= 1)
);

CREATE TABLE chatbot_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    channel_id text NOT NULL,
    source text NOT NULL,
    text text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('sent', 'skipped', 'refused')),
    reason text
);
CREATE INDEX chatbot_log_at ON chatbot_log (at DESC);
