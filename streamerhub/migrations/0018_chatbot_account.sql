-- The chat bot's own Twitch account (a second "bot" account, connected on the Chat bot page):
-- its grant (user:bot + user:write:chat) sealed like a channel's, refreshed by one holder
-- (bot/botaccount.py). At most one row: connecting another account replaces it.
CREATE TABLE twitch_bot_accounts (
    account_id           text PRIMARY KEY,           -- the bot's Twitch user id
    login                text NOT NULL,
    display_name         text NOT NULL,
    scopes               text[] NOT NULL DEFAULT '{}',
    access_token_sealed  bytea,                      -- crypto.py, aad "twitch_bot_accounts:<id>:…"
    refresh_token_sealed bytea,
    token_expires_at     timestamptz,
    status               text NOT NULL DEFAULT 'connected'
                         CHECK (status IN ('connected', 'disconnected')),
    status_reason        text,
    connected_at         timestamptz NOT NULL DEFAULT now(),
    validated_at         timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
