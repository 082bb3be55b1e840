-- Typed tables of the newer EventSub types (issue 13); their raw rows stay in twitch_events.
-- Owned by events/ (projections in events/typed.py); analytics/ reads them.

-- channel.bits.use: every use of Bits (kind: cheer, power_up, combo).
CREATE TABLE twitch_bits_uses (
    message_id    text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id    text NOT NULL,
    user_id       text,
    user_login    text,
    user_name     text,
    bits          integer NOT NULL,
    kind          text NOT NULL,
    power_up_type text,
    occurred_at   timestamptz NOT NULL
);
CREATE INDEX twitch_bits_uses_channel_time ON twitch_bits_uses (channel_id, occurred_at);

-- Every Bits use once: Twitch sends a cheer as both channel.cheer and channel.bits.use
-- (kind 'cheer'). A cheer counts here only when no cheer-kind Bits use of the same channel and
-- amount (and cheerer, unless anonymous) lies within 60 s of it: so a channel subscribed to both
-- counts each cheer once, and cheers stored before channel.bits.use existed still count.
CREATE VIEW twitch_bits AS
SELECT b.message_id, b.channel_id, b.user_id, b.user_login, b.user_name, b.bits, b.kind,
       b.occurred_at
  FROM twitch_bits_uses b
UNION ALL
SELECT c.message_id, c.channel_id, c.user_id, c.user_login, c.user_name, c.bits, 'cheer',
       c.occurred_at
  FROM twitch_cheers c
 WHERE NOT EXISTS (
       SELECT 1 FROM twitch_bits_uses b
        WHERE b.channel_id = c.channel_id AND b.kind = 'cheer' AND b.bits = c.bits
          AND (c.is_anonymous OR b.user_id IS NOT DISTINCT FROM c.user_id)
          AND b.occurred_at BETWEEN c.occurred_at - interval '60 seconds'
                                AND c.occurred_at + interval '60 seconds');

-- channel.channel_points_automatic_reward_redemption.add v2
CREATE TABLE twitch_automatic_redemptions (
    message_id     text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id     text NOT NULL,
    redemption_id  text NOT NULL,
    user_id        text NOT NULL,
    user_login     text NOT NULL,
    user_name      text NOT NULL,
    reward_type    text NOT NULL,
    channel_points integer NOT NULL,
    emote_name     text,
    redeemed_at    timestamptz NOT NULL
);
CREATE INDEX twitch_automatic_redemptions_channel_time
    ON twitch_automatic_redemptions (channel_id, redeemed_at);

-- channel.chat.message: one row per message; `text` is emptied after [events] chat_text_days
-- (the row, and so every count, stays). source_channel_id: the channel a shared-chat message
-- was sent in (NULL: this channel's own chat).
CREATE TABLE twitch_chat_messages (
    message_id        text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id        text NOT NULL,
    chat_message_id   text NOT NULL,
    chatter_user_id   text NOT NULL,
    chatter_user_login text NOT NULL,
    chatter_user_name text NOT NULL,
    message_type      text,
    text              text,
    bits              integer,
    source_channel_id text,
    occurred_at       timestamptz NOT NULL
);
CREATE INDEX twitch_chat_messages_channel_time ON twitch_chat_messages (channel_id, occurred_at);
-- the chat text retention finds the messages whose text is still there by age
CREATE INDEX twitch_chat_messages_text_age ON twitch_chat_messages (occurred_at)
    WHERE text IS NOT NULL;

-- channel.chat.notification: the notice (sub, resub, gift_paid_upgrade, announcement, …).
CREATE TABLE twitch_chat_notifications (
    message_id           text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id           text NOT NULL,
    notice_type          text NOT NULL,
    chatter_user_id      text,
    chatter_user_login   text,
    chatter_user_name    text,
    chatter_is_anonymous boolean NOT NULL DEFAULT false,
    system_message       text,
    text                 text,
    source_channel_id    text,
    occurred_at          timestamptz NOT NULL
);
CREATE INDEX twitch_chat_notifications_channel_time
    ON twitch_chat_notifications (channel_id, occurred_at);
CREATE INDEX twitch_chat_notifications_text_age ON twitch_chat_notifications (occurred_at)
    WHERE text IS NOT NULL;

-- channel.ad_break.begin
CREATE TABLE twitch_ad_breaks (
    message_id           text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id           text NOT NULL,
    duration_seconds     integer NOT NULL,
    is_automatic         boolean NOT NULL,
    requester_user_id    text,
    requester_user_login text,
    requester_user_name  text,
    started_at           timestamptz NOT NULL
);
CREATE INDEX twitch_ad_breaks_channel_time ON twitch_ad_breaks (channel_id, started_at);

-- channel.shoutout.create (direction 'sent') and .receive ('received'); `other_*` is the
-- channel shouted out (sent) or shouting out (received); viewer_count is that of the sender.
CREATE TABLE twitch_shoutouts (
    message_id        text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id        text NOT NULL,
    direction         text NOT NULL CHECK (direction IN ('sent', 'received')),
    other_user_id     text NOT NULL,
    other_user_login  text NOT NULL,
    other_user_name   text NOT NULL,
    moderator_user_id text,
    viewer_count      integer NOT NULL,
    started_at        timestamptz NOT NULL
);
CREATE INDEX twitch_shoutouts_channel_time ON twitch_shoutouts (channel_id, started_at);

-- channel.charity_campaign.donate/start/progress/stop. Amounts are in the currency's units
-- (value / 10^decimal_places): `amount` a donation, current/target the campaign's.
CREATE TABLE twitch_charity (
    message_id     text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id     text NOT NULL,
    phase          text NOT NULL CHECK (phase IN ('donate', 'start', 'progress', 'stop')),
    campaign_id    text NOT NULL,
    donation_id    text,
    charity_name   text,
    user_id        text,
    user_login     text,
    user_name      text,
    amount         numeric,
    current_amount numeric,
    target_amount  numeric,
    currency       text,
    occurred_at    timestamptz NOT NULL
);
CREATE INDEX twitch_charity_channel_time ON twitch_charity (channel_id, occurred_at);

-- channel.shared_chat.begin/update/end
CREATE TABLE twitch_shared_chats (
    message_id         text PRIMARY KEY REFERENCES twitch_events ON DELETE CASCADE,
    channel_id         text NOT NULL,
    phase              text NOT NULL CHECK (phase IN ('begin', 'update', 'end')),
    session_id         text NOT NULL,
    host_user_id       text NOT NULL,
    host_user_login    text NOT NULL,
    host_user_name     text NOT NULL,
    participants       jsonb NOT NULL DEFAULT '[]',
    occurred_at        timestamptz NOT NULL
);
CREATE INDEX twitch_shared_chats_channel_time ON twitch_shared_chats (channel_id, occurred_at);
