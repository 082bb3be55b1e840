"""The typed twitch_* tables: SQL projections of the raw twitch_events rows.

This is the one definition of every typed row. The store's batches project the raw rows they
have just inserted (in the same statement), `rebuild_typed` projects the stored ones, so live
events, spool replays and rebuilds cannot disagree, and Python never builds or encodes a typed
row. events.py checks, before anything is queued, that an event carries each field a projection
reads here with the right JSON type, so a bad event becomes a dead letter with the reason instead
of failing its batch. What could still fail is a time Python reads and PostgreSQL does not: the
store then splits the batch until it finds the row, and dead-letters it with the error, as it
does for any row the database refuses.

Each projection is a data-modifying CTE reading `new_events`, a CTE of raw rows:
(message_id, subscription_type, channel_id, occurred_at, backfilled, e = payload -> 'event').
The statements are assembled from these constant fragments once, at import; values always
travel as parameters.
"""

from __future__ import annotations

# Columns of the new_events CTE, read from a twitch_events row (or an INSERT's RETURNING).
NEW_EVENT_COLUMNS = """message_id, subscription_type, channel_id, occurred_at, backfilled,
       payload -> 'event' AS e"""

# subscription type → typed table (types without one are stored raw only).
_SUB_KINDS = (
    "channel.subscribe",
    "channel.subscription.message",
    "channel.subscription.gift",
    "channel.subscription.end",
)
_REDEMPTION = "channel.channel_points_custom_reward_redemption"
TABLE_OF: dict[str, str] = {
    "channel.follow": "twitch_follows",
    **{t: "twitch_subscriptions" for t in _SUB_KINDS},
    "channel.cheer": "twitch_cheers",
    "stream.online": "twitch_streams",
    "stream.offline": "twitch_streams",
    "channel.raid": "twitch_raids",
    f"{_REDEMPTION}.add": "twitch_redemptions",
    f"{_REDEMPTION}.update": "twitch_redemptions",
    "channel.update": "twitch_channel_updates",
    **{f"channel.hype_train.{p}": "twitch_hype_trains" for p in ("begin", "progress", "end")},
    **{f"channel.poll.{p}": "twitch_polls" for p in ("begin", "progress", "end")},
    **{
        f"channel.prediction.{p}": "twitch_predictions"
        for p in ("begin", "progress", "lock", "end")
    },
    **{f"channel.goal.{p}": "twitch_goals" for p in ("begin", "progress", "end")},
    "channel.bits.use": "twitch_bits_uses",
    "channel.channel_points_automatic_reward_redemption.add": "twitch_automatic_redemptions",
    "channel.chat.message": "twitch_chat_messages",
    "channel.chat.notification": "twitch_chat_notifications",
    "channel.ad_break.begin": "twitch_ad_breaks",
    "channel.shoutout.create": "twitch_shoutouts",
    "channel.shoutout.receive": "twitch_shoutouts",
    **{
        f"channel.charity_campaign.{p}": "twitch_charity"
        for p in ("donate", "start", "progress", "stop")
    },
    **{f"channel.shared_chat.{p}": "twitch_shared_chats" for p in ("begin", "update", "end")},
}
TYPED_TABLES: tuple[str, ...] = tuple(sorted(set(TABLE_OF.values())))

# The phase of a multi-part type: 'begin' of channel.poll.begin.
_PHASE = "split_part(subscription_type, '.', -1)"
# A JSON list that may be absent or null.
_LIST = "coalesce(nullif(e -> '{0}', 'null'::jsonb), '[]'::jsonb)"
# A Twitch amount object {value, decimal_places, currency} in the currency's units.
_PLACES = "(e -> '{0}' ->> 'decimal_places')::integer"
_MONEY = f"round((e -> '{{0}}' ->> 'value')::numeric / 10::numeric ^ {_PLACES}, {_PLACES})"

# The newer types (issue 13), appended to PROJECTIONS.
NEWER = f"""bits_uses AS (
    INSERT INTO twitch_bits_uses (message_id, channel_id, user_id, user_login, user_name, bits,
                                  kind, power_up_type, occurred_at)
    SELECT message_id, channel_id, e ->> 'user_id', e ->> 'user_login', e ->> 'user_name',
           (e ->> 'bits')::integer, e ->> 'type', e -> 'power_up' ->> 'type', occurred_at
      FROM new_events WHERE subscription_type = 'channel.bits.use'),
automatic_redemptions AS (
    INSERT INTO twitch_automatic_redemptions (message_id, channel_id, redemption_id, user_id,
                                              user_login, user_name, reward_type, channel_points,
                                              emote_name, redeemed_at)
    SELECT message_id, channel_id, e ->> 'id', e ->> 'user_id', e ->> 'user_login',
           e ->> 'user_name', e -> 'reward' ->> 'type',
           (e -> 'reward' ->> 'channel_points')::integer, e -> 'reward' -> 'emote' ->> 'name',
           (e ->> 'redeemed_at')::timestamptz
      FROM new_events
     WHERE subscription_type = 'channel.channel_points_automatic_reward_redemption.add'),
chat_messages AS (
    INSERT INTO twitch_chat_messages (message_id, channel_id, chat_message_id, chatter_user_id,
                                      chatter_user_login, chatter_user_name, message_type, text,
                                      bits, source_channel_id, occurred_at)
    SELECT message_id, channel_id, e ->> 'message_id', e ->> 'chatter_user_id',
           e ->> 'chatter_user_login', e ->> 'chatter_user_name', e ->> 'message_type',
           e -> 'message' ->> 'text', (e -> 'cheer' ->> 'bits')::integer,
           nullif(e ->> 'source_broadcaster_user_id', channel_id), occurred_at
      FROM new_events WHERE subscription_type = 'channel.chat.message'),
chat_notifications AS (
    INSERT INTO twitch_chat_notifications (message_id, channel_id, notice_type, chatter_user_id,
                                           chatter_user_login, chatter_user_name,
                                           chatter_is_anonymous, system_message, text,
                                           source_channel_id, occurred_at)
    SELECT message_id, channel_id, e ->> 'notice_type', e ->> 'chatter_user_id',
           e ->> 'chatter_user_login', e ->> 'chatter_user_name',
           coalesce((e ->> 'chatter_is_anonymous')::boolean, false), e ->> 'system_message',
           e -> 'message' ->> 'text', nullif(e ->> 'source_broadcaster_user_id', channel_id),
           occurred_at
      FROM new_events WHERE subscription_type = 'channel.chat.notification'),
ad_breaks AS (
    INSERT INTO twitch_ad_breaks (message_id, channel_id, duration_seconds, is_automatic,
                                  requester_user_id, requester_user_login, requester_user_name,
                                  started_at)
    SELECT message_id, channel_id, (e ->> 'duration_seconds')::integer,
           coalesce((e ->> 'is_automatic')::boolean, false), e ->> 'requester_user_id',
           e ->> 'requester_user_login', e ->> 'requester_user_name',
           (e ->> 'started_at')::timestamptz
      FROM new_events WHERE subscription_type = 'channel.ad_break.begin'),
shoutouts AS (
    INSERT INTO twitch_shoutouts (message_id, channel_id, direction, other_user_id,
                                  other_user_login, other_user_name, moderator_user_id,
                                  viewer_count, started_at)
    SELECT message_id, channel_id, CASE WHEN sent THEN 'sent' ELSE 'received' END,
           e ->> (side || '_user_id'), e ->> (side || '_user_login'),
           e ->> (side || '_user_name'), e ->> 'moderator_user_id',
           (e ->> 'viewer_count')::integer, (e ->> 'started_at')::timestamptz
      FROM (SELECT *, subscription_type = 'channel.shoutout.create' AS sent,
                   CASE WHEN subscription_type = 'channel.shoutout.create'
                        THEN 'to_broadcaster' ELSE 'from_broadcaster' END AS side
              FROM new_events
             WHERE subscription_type IN ('channel.shoutout.create',
                                         'channel.shoutout.receive')) s),
charity AS (
    INSERT INTO twitch_charity (message_id, channel_id, phase, campaign_id, donation_id,
                                charity_name, user_id, user_login, user_name, amount,
                                current_amount, target_amount, currency, occurred_at)
    SELECT message_id, channel_id, {_PHASE},
           CASE WHEN {_PHASE} = 'donate' THEN e ->> 'campaign_id' ELSE e ->> 'id' END,
           CASE WHEN {_PHASE} = 'donate' THEN e ->> 'id' END, e ->> 'charity_name',
           e ->> 'user_id', e ->> 'user_login', e ->> 'user_name', {_MONEY.format("amount")},
           {_MONEY.format("current_amount")}, {_MONEY.format("target_amount")},
           coalesce(e -> 'amount' ->> 'currency', e -> 'current_amount' ->> 'currency'),
           occurred_at
      FROM new_events WHERE subscription_type IN ('channel.charity_campaign.donate',
                                                  'channel.charity_campaign.start',
                                                  'channel.charity_campaign.progress',
                                                  'channel.charity_campaign.stop')),
shared_chats AS (
    INSERT INTO twitch_shared_chats (message_id, channel_id, phase, session_id, host_user_id,
                                     host_user_login, host_user_name, participants, occurred_at)
    SELECT message_id, channel_id, {_PHASE}, e ->> 'session_id',
           e ->> 'host_broadcaster_user_id', e ->> 'host_broadcaster_user_login',
           e ->> 'host_broadcaster_user_name', {_LIST.format("participants")}, occurred_at
      FROM new_events WHERE subscription_type IN ('channel.shared_chat.begin',
                                                  'channel.shared_chat.update',
                                                  'channel.shared_chat.end'))"""

PROJECTIONS = f"""
follows AS (
    INSERT INTO twitch_follows (message_id, channel_id, user_id, user_login, user_name,
                                followed_at, backfilled)
    SELECT message_id, channel_id, e ->> 'user_id', e ->> 'user_login', e ->> 'user_name',
           (e ->> 'followed_at')::timestamptz, backfilled
      FROM new_events WHERE subscription_type = 'channel.follow'),
subscriptions AS (
    INSERT INTO twitch_subscriptions (message_id, channel_id, kind, user_id, user_login,
                                      user_name, tier, is_gift, is_anonymous, gift_total,
                                      cumulative_total, cumulative_months, streak_months,
                                      duration_months, message, occurred_at)
    SELECT message_id, channel_id, kind, e ->> 'user_id', e ->> 'user_login', e ->> 'user_name',
           e ->> 'tier',
           CASE WHEN kind = 'gift' THEN true ELSE coalesce((e ->> 'is_gift')::boolean, false) END,
           coalesce((e ->> 'is_anonymous')::boolean, false),
           CASE WHEN kind = 'gift' THEN (e ->> 'total')::integer END,
           (e ->> 'cumulative_total')::integer, (e ->> 'cumulative_months')::integer,
           (e ->> 'streak_months')::integer, (e ->> 'duration_months')::integer,
           CASE WHEN kind = 'resub' THEN e -> 'message' ->> 'text' END, occurred_at
      FROM (SELECT *, CASE subscription_type WHEN 'channel.subscribe' THEN 'sub'
                                             WHEN 'channel.subscription.message' THEN 'resub'
                                             WHEN 'channel.subscription.gift' THEN 'gift'
                                             ELSE 'end' END AS kind
              FROM new_events
             WHERE subscription_type IN ('channel.subscribe', 'channel.subscription.message',
                                         'channel.subscription.gift',
                                         'channel.subscription.end')) s),
cheers AS (
    INSERT INTO twitch_cheers (message_id, channel_id, user_id, user_login, user_name,
                               is_anonymous, bits, message, occurred_at)
    SELECT message_id, channel_id, e ->> 'user_id', e ->> 'user_login', e ->> 'user_name',
           coalesce((e ->> 'is_anonymous')::boolean, false), (e ->> 'bits')::integer,
           e ->> 'message', occurred_at
      FROM new_events WHERE subscription_type = 'channel.cheer'),
raids AS (
    INSERT INTO twitch_raids (message_id, channel_id, from_user_id, from_user_login,
                              from_user_name, to_user_id, to_user_login, to_user_name, viewers,
                              occurred_at)
    SELECT message_id, channel_id, e ->> 'from_broadcaster_user_id',
           e ->> 'from_broadcaster_user_login', e ->> 'from_broadcaster_user_name',
           e ->> 'to_broadcaster_user_id', e ->> 'to_broadcaster_user_login',
           e ->> 'to_broadcaster_user_name', (e ->> 'viewers')::integer, occurred_at
      FROM new_events WHERE subscription_type = 'channel.raid'),
redemptions AS (
    INSERT INTO twitch_redemptions (message_id, channel_id, kind, redemption_id, user_id,
                                    user_login, user_name, user_input, status, reward_id,
                                    reward_title, reward_cost, reward_prompt, redeemed_at)
    SELECT message_id, channel_id, {_PHASE}, e ->> 'id', e ->> 'user_id', e ->> 'user_login',
           e ->> 'user_name', e ->> 'user_input', e ->> 'status', e -> 'reward' ->> 'id',
           e -> 'reward' ->> 'title', (e -> 'reward' ->> 'cost')::integer,
           e -> 'reward' ->> 'prompt', (e ->> 'redeemed_at')::timestamptz
      FROM new_events
     WHERE subscription_type IN ('{_REDEMPTION}.add', '{_REDEMPTION}.update')),
channel_updates AS (
    INSERT INTO twitch_channel_updates (message_id, channel_id, title, language, category_id,
                                        category_name, content_classification_labels,
                                        occurred_at)
    SELECT message_id, channel_id, e ->> 'title', e ->> 'language', e ->> 'category_id',
           e ->> 'category_name', {_LIST.format("content_classification_labels")}, occurred_at
      FROM new_events WHERE subscription_type = 'channel.update'),
hype_trains AS (
    INSERT INTO twitch_hype_trains (message_id, channel_id, phase, train_id, train_type,
                                    is_shared_train, level, total, progress, goal, started_at,
                                    ended_at, occurred_at)
    SELECT message_id, channel_id, {_PHASE}, e ->> 'id', e ->> 'type',
           (e ->> 'is_shared_train')::boolean, (e ->> 'level')::integer,
           (e ->> 'total')::integer, (e ->> 'progress')::integer, (e ->> 'goal')::integer,
           (e ->> 'started_at')::timestamptz, (e ->> 'ended_at')::timestamptz, occurred_at
      FROM new_events
     WHERE subscription_type IN ('channel.hype_train.begin', 'channel.hype_train.progress',
                                 'channel.hype_train.end')),
polls AS (
    INSERT INTO twitch_polls (message_id, channel_id, phase, poll_id, title, status, choices,
                              started_at, ended_at, occurred_at)
    SELECT message_id, channel_id, {_PHASE}, e ->> 'id', e ->> 'title', e ->> 'status',
           {_LIST.format("choices")}, (e ->> 'started_at')::timestamptz,
           (e ->> 'ended_at')::timestamptz, occurred_at
      FROM new_events
     WHERE subscription_type IN ('channel.poll.begin', 'channel.poll.progress',
                                 'channel.poll.end')),
predictions AS (
    INSERT INTO twitch_predictions (message_id, channel_id, phase, prediction_id, title, status,
                                    winning_outcome_id, outcomes, started_at, occurred_at)
    SELECT message_id, channel_id, {_PHASE}, e ->> 'id', e ->> 'title', e ->> 'status',
           e ->> 'winning_outcome_id', {_LIST.format("outcomes")},
           (e ->> 'started_at')::timestamptz, occurred_at
      FROM new_events
     WHERE subscription_type IN ('channel.prediction.begin', 'channel.prediction.progress',
                                 'channel.prediction.lock', 'channel.prediction.end')),
goals AS (
    INSERT INTO twitch_goals (message_id, channel_id, phase, goal_id, goal_type, description,
                              current_amount, target_amount, is_achieved, started_at, ended_at,
                              occurred_at)
    SELECT message_id, channel_id, {_PHASE}, e ->> 'id', e ->> 'type', e ->> 'description',
           (e ->> 'current_amount')::integer, (e ->> 'target_amount')::integer,
           (e ->> 'is_achieved')::boolean, (e ->> 'started_at')::timestamptz,
           (e ->> 'ended_at')::timestamptz, occurred_at
      FROM new_events
     WHERE subscription_type IN ('channel.goal.begin', 'channel.goal.progress',
                                 'channel.goal.end')),
{NEWER}"""

# stream.online/offline rows go in a statement of their own, AFTER the others: their trigger
# recounts the sessions around them from the typed rows, while the follow/sub/cheer/raid
# triggers add their rows to the sessions. In one statement both fire at its end, in an order
# PostgreSQL does not promise, and a batch's follows could be counted twice.
STREAMS = """
streams AS (
    INSERT INTO twitch_streams (message_id, channel_id, kind, stream_id, stream_type,
                                started_at, occurred_at, reconciled)
    SELECT message_id, channel_id, online_or_offline,
           CASE WHEN online_or_offline = 'online' THEN e ->> 'id' END,
           CASE WHEN online_or_offline = 'online' THEN e ->> 'type' END,
           CASE WHEN online_or_offline = 'online' THEN (e ->> 'started_at')::timestamptz END,
           occurred_at, backfilled
      FROM (SELECT *, CASE subscription_type WHEN 'stream.online' THEN 'online'
                                             ELSE 'offline' END AS online_or_offline
              FROM new_events
             WHERE subscription_type IN ('stream.online', 'stream.offline')) s)"""

# Stored raw rows as new_events: streams after a batch, and rebuild_typed.
STORED = f"""
WITH new_events AS (
    SELECT {NEW_EVENT_COLUMNS}
      FROM twitch_events WHERE message_id = ANY($1::text[]))"""

PROJECT_STORED = f"{STORED},{PROJECTIONS}\nSELECT count(*) FROM new_events"
PROJECT_STORED_STREAMS = f"{STORED},{STREAMS}\nSELECT count(*) FROM new_events"
DELETES = {table: f"DELETE FROM {table}" for table in TYPED_TABLES}
