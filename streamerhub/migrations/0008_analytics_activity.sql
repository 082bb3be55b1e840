-- 0008: analytics from the raw event log (chat, Bits uses, ads, shoutouts, charity) and a
-- bucket's peak that is its own.
--
-- The new types are read straight from twitch_events by subscription_type with Twitch's
-- documented payload fields, so these figures do not depend on any typed table. Each row counts
-- at its occurred_at (the message time the export and the event browser use too). The rollups
-- only ever grow: a statement-level trigger adds what each INSERT stored (duplicates are never
-- inserted, so never counted), and nothing is subtracted when raw rows are deleted, so removing
-- old chat text (retention) keeps every count and every chatter.

-- ----------------------------------------------------------------------------- peaks

-- A bucket's peak is the highest sample taken inside it. 0003 also counted the sample before
-- the bucket whose span reached into it: a 999-viewer spike at 23:59:30 became the next day's
-- peak. Watch time and live time still split each sample's span exactly at the edges.
CREATE OR REPLACE FUNCTION analytics_raw_viewers(p_channel text, p_lo timestamptz, p_hi timestamptz,
                                                 OUT viewer_s bigint, OUT live_s bigint,
                                                 OUT peak integer, OUT samples integer)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(x.viewer_count::bigint * x.overlap), 0)::bigint,
           coalesce(sum(x.overlap), 0)::bigint,
           coalesce(max(x.viewer_count) FILTER (WHERE x.sampled_at >= p_lo), 0),
           (count(*) FILTER (WHERE x.sampled_at >= p_lo))::integer
      FROM (SELECT s.viewer_count, s.sampled_at,
                   greatest(0, extract(epoch FROM
                       least(s.sampled_at + make_interval(secs => s.span_s), p_hi)
                       - greatest(s.sampled_at, p_lo)))::bigint AS overlap
              FROM viewer_samples s
             WHERE s.channel_id = p_channel AND s.sampled_at >= p_lo - interval '15 minutes'
               AND s.sampled_at < p_hi) x
$$;

-- ----------------------------------------------------------------------------- tables

-- Counters per UTC bucket (15 min, 1 h, 1 day), like analytics_event_rollup.
CREATE TABLE analytics_activity_rollup (
    channel_id        text NOT NULL,
    res               integer NOT NULL CHECK (res IN (900, 3600, 86400)),
    bucket            timestamptz NOT NULL,
    chat_messages     bigint NOT NULL DEFAULT 0,  -- channel.chat.message of this channel's chat
    bits_power_up     bigint NOT NULL DEFAULT 0,  -- channel.bits.use type power_up
    bits_combo        bigint NOT NULL DEFAULT 0,  -- channel.bits.use type combo
    bits_use_cheer    bigint NOT NULL DEFAULT 0,  -- channel.bits.use type cheer (= channel.cheer)
    ad_breaks         integer NOT NULL DEFAULT 0, -- channel.ad_break.begin
    ad_seconds        bigint NOT NULL DEFAULT 0,  -- Σ duration_seconds
    shoutouts_in      integer NOT NULL DEFAULT 0, -- channel.shoutout.receive
    shoutout_viewers  bigint NOT NULL DEFAULT 0,  -- Σ viewer_count
    charity_donations integer NOT NULL DEFAULT 0, -- channel.charity_campaign.donate
    charity_amount    numeric NOT NULL DEFAULT 0, -- Σ amount.value / 10^decimal_places
    PRIMARY KEY (channel_id, res, bucket)
) WITH (fillfactor = 70);

-- Who chatted in each UTC hour, with how many messages: the edges of a range's unique chatters
-- and a stream's top chatters, without reading the messages again. `chatter` is the id of
-- analytics_chatter_ids (below), so counting reads the primary key only.
CREATE TABLE analytics_chatters (
    channel_id text NOT NULL,
    hour       timestamptz NOT NULL,
    chatter    integer NOT NULL,
    user_id    text NOT NULL,
    user_login text NOT NULL,
    messages   integer NOT NULL,
    PRIMARY KEY (channel_id, hour, chatter)
) WITH (fillfactor = 80);

-- Every chatter of a channel once: a small number (their bit in the day bitmaps below) and
-- when they first wrote.
CREATE TABLE analytics_chatter_ids (
    channel_id text NOT NULL,
    user_id    text NOT NULL,
    id         integer NOT NULL,                  -- 0, 1, 2 … in the order chatters appeared
    first_at   timestamptz NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
CREATE UNIQUE INDEX analytics_chatter_ids_id ON analytics_chatter_ids (channel_id, id);
CREATE INDEX analytics_chatter_ids_first ON analytics_chatter_ids (channel_id, first_at);

-- Who chatted on each UTC day, as a bitmap over chatter ids: the unique chatters of a month are
-- bit_count(bit_or(…)) of 30 short rows, whatever the chat volume (a distinct count over the
-- chatters of every day grows with the chat).
CREATE TABLE analytics_chatter_days (
    channel_id text NOT NULL,
    day        timestamptz NOT NULL,
    seen       varbit NOT NULL,
    PRIMARY KEY (channel_id, day)
);

-- A bitmap with the given bits set (bit n counted from the left, as get_bit does).
CREATE FUNCTION analytics_bits_of(ids integer[]) RETURNS varbit
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT string_agg(coalesce(b.v, 0)::bit(8)::text, '' ORDER BY g.g)::varbit
      FROM generate_series(0, (SELECT max(i) FROM unnest(ids) i) / 8) g(g)
      LEFT JOIN (SELECT i / 8 AS g, bit_or(1 << (7 - i % 8)) AS v FROM unnest(ids) i GROUP BY 1) b
        ON b.g = g.g
$$;

-- `a` with the bits `ids` set too, grown as needed; only bits not set yet cost a copy.
CREATE FUNCTION analytics_set_bits(a varbit, ids integer[]) RETURNS varbit
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    b varbit := coalesce(a, B'');
    n integer := (SELECT max(i) FROM unnest(ids) i) + 1;
    i integer;
BEGIN
    IF n IS NULL THEN
        RETURN b;
    END IF;
    IF length(b) < n THEN
        b := b || repeat('0', n - length(b))::varbit;
    END IF;
    FOREACH i IN ARRAY ids LOOP
        IF get_bit(b, i) = 0 THEN
            b := set_bit(b, i, 1);
        END IF;
    END LOOP;
    RETURN b;
END $$;

-- Give new chatters their ids (one writer at a time: ids stay dense) and mark who chatted on
-- which day, from parallel arrays (channel, chatter, when): one entry per message or per chatter-day.
CREATE FUNCTION analytics_note_chatters(p_channels text[], p_users text[], p_ats timestamptz[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF coalesce(cardinality(p_channels), 0) = 0 THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_channels, p_users) c(ch, u)
                WHERE NOT EXISTS (SELECT 1 FROM analytics_chatter_ids k
                                   WHERE k.channel_id = c.ch AND k.user_id = c.u)) THEN
        PERFORM pg_advisory_xact_lock(hashtext('analytics_chatter_ids'));
        INSERT INTO analytics_chatter_ids (channel_id, user_id, id, first_at)
        SELECT n.ch, n.u,
               coalesce((SELECT max(k.id) + 1 FROM analytics_chatter_ids k WHERE k.channel_id = n.ch), 0)
               + row_number() OVER (PARTITION BY n.ch ORDER BY n.first_at, n.u) - 1,
               n.first_at
          FROM (SELECT c.ch, c.u, min(c.at) AS first_at FROM unnest(p_channels, p_users, p_ats) c(ch, u, at)
                 WHERE NOT EXISTS (SELECT 1 FROM analytics_chatter_ids k
                                    WHERE k.channel_id = c.ch AND k.user_id = c.u)
                 GROUP BY 1, 2) n;
    END IF;
    UPDATE analytics_chatter_ids k SET first_at = n.first_at   -- a late (backfilled) message
      FROM (SELECT c.ch, c.u, min(c.at) AS first_at FROM unnest(p_channels, p_users, p_ats) c(ch, u, at)
             GROUP BY 1, 2) n
     WHERE k.channel_id = n.ch AND k.user_id = n.u AND n.first_at < k.first_at;
    FOR r IN
        SELECT c.ch, date_bin('1 day', c.at, timestamptz 'epoch') AS day, array_agg(DISTINCT k.id) AS ids
          FROM unnest(p_channels, p_users, p_ats) c(ch, u, at)
          JOIN analytics_chatter_ids k ON k.channel_id = c.ch AND k.user_id = c.u
         GROUP BY 1, 2 ORDER BY 1, 2
    LOOP
        INSERT INTO analytics_chatter_days AS d (channel_id, day, seen)
        VALUES (r.ch, r.day, analytics_bits_of(r.ids))
        ON CONFLICT (channel_id, day) DO UPDATE SET seen = analytics_set_bits(d.seen, r.ids);
    END LOOP;
END $$;

-- ----------------------------------------------------------------------------- facts

CREATE TYPE analytics_activity_fact AS (
    channel_id text, at timestamptz, chat_messages bigint, bits_power_up bigint,
    bits_combo bigint, bits_use_cheer bigint, ad_breaks integer, ad_seconds bigint,
    shoutouts_in integer, shoutout_viewers bigint, charity_donations integer,
    charity_amount numeric, chatter_id text, chatter_login text);

-- What one raw row adds (null for the types not counted here). Payload fields as Twitch
-- documents them; a malformed number counts as 0 rather than failing the store's INSERT.
CREATE FUNCTION analytics_number(v text) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v ~ '^-?[0-9]{1,15}(\.[0-9]{1,15})?$' THEN v::numeric ELSE 0 END
$$;

CREATE FUNCTION analytics_activity_facts(t text, channel text, at timestamptz, e jsonb)
RETURNS analytics_activity_fact LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
      WHEN t = 'channel.chat.message'
           -- shared chat also delivers the other channels' messages: count ours only
           AND coalesce(nullif(e ->> 'source_broadcaster_user_id', ''), channel) = channel THEN
        ROW(channel, at, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            nullif(e ->> 'chatter_user_id', ''), coalesce(e ->> 'chatter_user_login', ''))
            ::analytics_activity_fact
      WHEN t = 'channel.bits.use' THEN
        ROW(channel, at, 0,
            CASE WHEN e ->> 'type' = 'power_up' THEN analytics_number(e ->> 'bits') ELSE 0 END,
            CASE WHEN e ->> 'type' = 'combo' THEN analytics_number(e ->> 'bits') ELSE 0 END,
            CASE WHEN e ->> 'type' = 'cheer' THEN analytics_number(e ->> 'bits') ELSE 0 END,
            0, 0, 0, 0, 0, 0, NULL, NULL)::analytics_activity_fact
      WHEN t = 'channel.ad_break.begin' THEN
        ROW(channel, at, 0, 0, 0, 0, 1, analytics_number(e ->> 'duration_seconds'), 0, 0, 0, 0,
            NULL, NULL)::analytics_activity_fact
      WHEN t = 'channel.shoutout.receive' THEN
        ROW(channel, at, 0, 0, 0, 0, 0, 0, 1, analytics_number(e ->> 'viewer_count'), 0, 0,
            NULL, NULL)::analytics_activity_fact
      WHEN t = 'channel.charity_campaign.donate' THEN
        ROW(channel, at, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            analytics_number(e #>> '{amount,value}')
              / power(10::numeric,
                      greatest(0, least(trunc(analytics_number(e #>> '{amount,decimal_places}')), 9))),
            NULL, NULL)::analytics_activity_fact
    END
$$;

-- Add facts to the rollups and the chatter tables, in lock order (never a deadlock).
CREATE FUNCTION analytics_apply_activity(facts analytics_activity_fact[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF coalesce(cardinality(facts), 0) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO analytics_activity_rollup AS r
           (channel_id, res, bucket, chat_messages, bits_power_up, bits_combo, bits_use_cheer,
            ad_breaks, ad_seconds, shoutouts_in, shoutout_viewers, charity_donations, charity_amount)
    SELECT f.channel_id, l.res, date_bin(l.stride, f.at, timestamptz 'epoch'),
           sum(f.chat_messages), sum(f.bits_power_up), sum(f.bits_combo), sum(f.bits_use_cheer),
           sum(f.ad_breaks), sum(f.ad_seconds), sum(f.shoutouts_in), sum(f.shoutout_viewers),
           sum(f.charity_donations), sum(f.charity_amount)
      FROM unnest(facts) f
     CROSS JOIN (VALUES (900, interval '15 minutes'), (3600, interval '1 hour'),
                        (86400, interval '1 day')) l(res, stride)
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3
    ON CONFLICT (channel_id, res, bucket) DO UPDATE SET
           chat_messages = r.chat_messages + excluded.chat_messages,
           bits_power_up = r.bits_power_up + excluded.bits_power_up,
           bits_combo = r.bits_combo + excluded.bits_combo,
           bits_use_cheer = r.bits_use_cheer + excluded.bits_use_cheer,
           ad_breaks = r.ad_breaks + excluded.ad_breaks,
           ad_seconds = r.ad_seconds + excluded.ad_seconds,
           shoutouts_in = r.shoutouts_in + excluded.shoutouts_in,
           shoutout_viewers = r.shoutout_viewers + excluded.shoutout_viewers,
           charity_donations = r.charity_donations + excluded.charity_donations,
           charity_amount = r.charity_amount + excluded.charity_amount;
    PERFORM analytics_note_chatters(array_agg(f.channel_id), array_agg(f.chatter_id), array_agg(f.at))
       FROM (SELECT DISTINCT ON (channel_id, chatter_id, date_bin('1 day', at, timestamptz 'epoch'))
                    channel_id, chatter_id, at
               FROM unnest(facts) WHERE chatter_id IS NOT NULL
              ORDER BY channel_id, chatter_id, date_bin('1 day', at, timestamptz 'epoch'), at) f;
    INSERT INTO analytics_chatters AS c (channel_id, hour, chatter, user_id, user_login, messages)
    SELECT f.channel_id, date_bin('1 hour', f.at, timestamptz 'epoch'), k.id, f.chatter_id,
           max(f.chatter_login), count(*)
      FROM unnest(facts) f
      JOIN analytics_chatter_ids k ON k.channel_id = f.channel_id AND k.user_id = f.chatter_id
     GROUP BY 1, 2, 3, 4
     ORDER BY 1, 2, 3
    ON CONFLICT (channel_id, hour, chatter) DO UPDATE SET
           messages = c.messages + excluded.messages, user_login = excluded.user_login;
END $$;

CREATE FUNCTION analytics_events_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM analytics_apply_activity(ARRAY(
        SELECT f FROM (SELECT analytics_activity_facts(n.subscription_type, n.channel_id,
                                                       n.occurred_at, n.payload -> 'event') f
                         FROM new_rows n
                        WHERE n.subscription_type IN ('channel.chat.message', 'channel.bits.use',
                                                      'channel.ad_break.begin',
                                                      'channel.shoutout.receive',
                                                      'channel.charity_campaign.donate')) x
         WHERE (f).channel_id IS NOT NULL));
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_events_ins AFTER INSERT ON twitch_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_events_inserted();

-- The same facts read from the raw rows of [lo, hi): unaligned edges of a range, and the rebuild.
CREATE FUNCTION analytics_raw_activity(p_channel text, p_lo timestamptz, p_hi timestamptz)
RETURNS SETOF analytics_activity_fact LANGUAGE sql STABLE AS $$
    SELECT (f).* FROM (
        SELECT analytics_activity_facts(e.subscription_type, e.channel_id, e.occurred_at,
                                        e.payload -> 'event') f
          FROM twitch_events e
         WHERE e.subscription_type IN ('channel.chat.message', 'channel.bits.use',
                                       'channel.ad_break.begin', 'channel.shoutout.receive',
                                       'channel.charity_campaign.donate')
           AND e.channel_id = p_channel AND e.occurred_at >= p_lo AND e.occurred_at < p_hi) x
     WHERE (f).channel_id IS NOT NULL
$$;

-- Recompute the activity rollups and chatters from the raw rows, set-based (a bulk load, and
-- this migration). Only right while the log is whole: chat text removed by retention is gone
-- from the raw rows but not from the rollups, which the triggers only ever add to.
CREATE FUNCTION analytics_activity_rebuild(p_channel text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM analytics_activity_rollup WHERE p_channel IS NULL OR channel_id = p_channel;
    DELETE FROM analytics_chatters WHERE p_channel IS NULL OR channel_id = p_channel;
    CREATE TEMP TABLE analytics_rebuild_facts ON COMMIT DROP AS
    SELECT (x.f).* FROM (
        SELECT analytics_activity_facts(e.subscription_type, e.channel_id, e.occurred_at,
                                        e.payload -> 'event') f
          FROM twitch_events e
         WHERE e.subscription_type IN ('channel.chat.message', 'channel.bits.use',
                                       'channel.ad_break.begin', 'channel.shoutout.receive',
                                       'channel.charity_campaign.donate')
           AND (p_channel IS NULL OR e.channel_id = p_channel)) x
     WHERE (x.f).channel_id IS NOT NULL;
    INSERT INTO analytics_activity_rollup
           (channel_id, res, bucket, chat_messages, bits_power_up, bits_combo, bits_use_cheer,
            ad_breaks, ad_seconds, shoutouts_in, shoutout_viewers, charity_donations, charity_amount)
    SELECT f.channel_id, l.res, date_bin(l.stride, f.at, timestamptz 'epoch'),
           sum(f.chat_messages), sum(f.bits_power_up), sum(f.bits_combo), sum(f.bits_use_cheer),
           sum(f.ad_breaks), sum(f.ad_seconds), sum(f.shoutouts_in), sum(f.shoutout_viewers),
           sum(f.charity_donations), sum(f.charity_amount)
      FROM analytics_rebuild_facts f
     CROSS JOIN (VALUES (900, interval '15 minutes'), (3600, interval '1 hour'),
                        (86400, interval '1 day')) l(res, stride)
     GROUP BY 1, 2, 3;
    DELETE FROM analytics_chatter_days WHERE p_channel IS NULL OR channel_id = p_channel;
    DELETE FROM analytics_chatter_ids WHERE p_channel IS NULL OR channel_id = p_channel;
    INSERT INTO analytics_chatter_ids (channel_id, user_id, id, first_at)
    SELECT channel_id, chatter_id,
           row_number() OVER (PARTITION BY channel_id ORDER BY min(at), chatter_id) - 1, min(at)
      FROM analytics_rebuild_facts WHERE chatter_id IS NOT NULL
     GROUP BY channel_id, chatter_id;
    INSERT INTO analytics_chatters (channel_id, hour, chatter, user_id, user_login, messages)
    SELECT f.channel_id, date_bin('1 hour', f.at, timestamptz 'epoch'), k.id, f.chatter_id,
           max(f.chatter_login), count(*)
      FROM analytics_rebuild_facts f
      JOIN analytics_chatter_ids k ON k.channel_id = f.channel_id AND k.user_id = f.chatter_id
     GROUP BY 1, 2, 3, 4;
    INSERT INTO analytics_chatter_days (channel_id, day, seen)
    SELECT channel_id, date_bin('1 day', hour, timestamptz 'epoch'), analytics_bits_of(array_agg(DISTINCT chatter))
      FROM analytics_chatters
     WHERE p_channel IS NULL OR channel_id = p_channel
     GROUP BY 1, 2;
    DROP TABLE analytics_rebuild_facts;
END $$;

-- What the log already holds when this migration runs.
SELECT analytics_activity_rebuild();

-- Peaks as redefined above, for the history already rolled up: every quarter with viewers
-- again, and the hours and days above them (the event rollups stay as they are).
SELECT analytics_refresh_viewer_buckets(array_agg(channel_id), array_agg(bucket))
  FROM analytics_viewer_rollup WHERE res = 900;
