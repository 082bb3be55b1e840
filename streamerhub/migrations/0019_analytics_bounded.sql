-- 0019: chat analytics whose cost does not grow with the chat. Until now a range's edges read
-- raw chat: up to 15 minutes of messages at each unaligned end (counts), every message of the
-- quarters and every chatter of the hours at the edges (unique chatters), and every chatter of
-- every hour of a stream (its top chatters): all of it grows with the chat volume.
--
-- Now:
-- - the activity rollup has a minute level too (res 60): a raw edge is under a minute;
-- - who chatted is a bitmap over chatter ids per UTC minute, quarter and hour
--   (analytics_chatter_sets), as it already was per day (analytics_chatter_days): the unique
--   chatters of any range are bit_count of the OR of at most ~2×(14 + 3 + 23) + days short rows
--   and the chatters of the last seconds, bounded by the number of chatters, not messages;
-- - each stream keeps its chatters with their message counts (analytics_session_chatters) and its
--   supporters with their subs, gifts and Bits (analytics_session_supporters): its top chatters
--   and top supporters are the first rows of an index, whatever the chat and the events.
--
-- Everything is kept by triggers (0008's on the raw log, new ones on subscriptions and cheers); a
-- stream whose start or end moves has its chatters and supporters recounted. This migration fills the new rows for the history already stored: the hour
-- bitmaps from analytics_chatters (whole even where retention removed the chat text), the finer
-- ones from the raw log.

-- ----------------------------------------------------------------------------- tables

ALTER TABLE analytics_activity_rollup DROP CONSTRAINT analytics_activity_rollup_res_check;
ALTER TABLE analytics_activity_rollup ADD CONSTRAINT analytics_activity_rollup_res_check
    CHECK (res IN (60, 900, 3600, 86400));

-- Who chatted in each UTC minute, quarter and hour: a bitmap over analytics_chatter_ids.id.
CREATE TABLE analytics_chatter_sets (
    channel_id text NOT NULL,
    res        integer NOT NULL CHECK (res IN (60, 900, 3600)),
    bucket     timestamptz NOT NULL,
    seen       varbit NOT NULL,
    PRIMARY KEY (channel_id, res, bucket)
);

-- The chatters of each ended stream: the messages from its start until its end, never past the
-- next stream's start (streams never overlap: a message belongs to the latest stream started at
-- or before it, as 0003 counts a stream's events). A live stream's are counted when it ends (until
-- then its page reads them from analytics_chatters and the raw log: one stream's worth); a
-- message that arrives for an ended stream (a backfill) is added to it.
CREATE TABLE analytics_session_chatters (
    channel_id text NOT NULL,
    stream_id  text NOT NULL,
    user_id    text NOT NULL,
    user_login text NOT NULL,
    messages   integer NOT NULL,
    PRIMARY KEY (channel_id, stream_id, user_id)
) WITH (fillfactor = 80);
CREATE INDEX analytics_session_chatters_top
    ON analytics_session_chatters (channel_id, stream_id, messages DESC, user_id);

-- Who gave most during each ended stream (same window, same rules): a sub (new, resub or gifted, Tier 1) weighs 500
-- Bits. Anonymous gifts and cheers have no one to name: left out; Bits are channel.cheer's plus
-- the Power-ups and combos of channel.bits.use. `events`: rows counted (0: all taken back).
CREATE TABLE analytics_session_supporters (
    channel_id text NOT NULL,
    stream_id  text NOT NULL,
    user_id    text NOT NULL,
    user_login text,
    subs       bigint NOT NULL DEFAULT 0,
    gifted     bigint NOT NULL DEFAULT 0,
    bits       bigint NOT NULL DEFAULT 0,
    events     integer NOT NULL DEFAULT 0,
    score      bigint GENERATED ALWAYS AS (500 * (subs + gifted) + bits) STORED,
    PRIMARY KEY (channel_id, stream_id, user_id)
) WITH (fillfactor = 80);
CREATE INDEX analytics_session_supporters_top
    ON analytics_session_supporters (channel_id, stream_id, score DESC, user_id) WHERE events > 0;

CREATE TYPE analytics_supporter_fact AS (
    channel_id text, at timestamptz, user_id text, user_login text, subs bigint, gifted bigint,
    bits bigint, events integer);

-- ----------------------------------------------------------------------------- bitmaps

-- A bitmap with the given bits set (bit n counted from the left, as get_bit does), built from
-- the set bytes only: 0008's version wrote out every byte up to the highest id, a cost that grew
-- with the channel's chatters for a batch of three.
CREATE OR REPLACE FUNCTION analytics_bits_of(ids integer[]) RETURNS varbit
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ('x' || string_agg(repeat('00', b.g - b.prev - 1) || lpad(to_hex(b.v), 2, '0'), ''
                              ORDER BY b.g))::varbit
      FROM (SELECT g, v, coalesce(lag(g) OVER (ORDER BY g), -1) AS prev
              FROM (SELECT i / 8 AS g, bit_or(1 << (7 - i % 8)) AS v
                      FROM unnest(ids) i WHERE i IS NOT NULL GROUP BY 1) x) b
$$;

-- a | b, the shorter one padded with zeros (the padding OR'ed with the longer one's tail is that
-- tail).
CREATE FUNCTION analytics_or(a varbit, b varbit) RETURNS varbit
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN length(a) = length(b) THEN a | b
                WHEN length(a) < length(b) THEN (a || substring(b FROM length(a) + 1)) | b
                ELSE (b || substring(a FROM length(b) + 1)) | a END
$$;

CREATE AGGREGATE analytics_union(varbit) (SFUNC = analytics_or, STYPE = varbit);

-- Give new chatters their ids (one writer at a time: ids stay dense) and mark who chatted in
-- which minute, quarter, hour and day, from parallel arrays (channel, chatter, when): one entry
-- per message or per chatter-minute.
CREATE OR REPLACE FUNCTION analytics_note_chatters(p_channels text[], p_users text[],
                                                   p_ats timestamptz[])
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
    -- In lock order: the sets by (channel, res, bucket), then the days.
    FOR r IN
        SELECT c.ch, l.res, date_bin(l.stride, c.at, timestamptz 'epoch') AS bucket,
               analytics_bits_of(array_agg(k.id)) AS seen
          FROM unnest(p_channels, p_users, p_ats) c(ch, u, at)
          JOIN analytics_chatter_ids k ON k.channel_id = c.ch AND k.user_id = c.u
         CROSS JOIN (VALUES (60, interval '1 minute'), (900, interval '15 minutes'),
                            (3600, interval '1 hour'), (86400, interval '1 day')) l(res, stride)
         GROUP BY 1, 2, 3 ORDER BY (l.res = 86400), 1, 2, 3
    LOOP
        IF r.res = 86400 THEN
            INSERT INTO analytics_chatter_days AS d (channel_id, day, seen)
            VALUES (r.ch, r.bucket, r.seen)
            ON CONFLICT (channel_id, day) DO UPDATE SET seen = analytics_or(d.seen, excluded.seen)
             WHERE analytics_or(d.seen, excluded.seen) <> d.seen;
        ELSE
            INSERT INTO analytics_chatter_sets AS d (channel_id, res, bucket, seen)
            VALUES (r.ch, r.res, r.bucket, r.seen)
            ON CONFLICT (channel_id, res, bucket) DO UPDATE SET seen = analytics_or(d.seen, excluded.seen)
             WHERE analytics_or(d.seen, excluded.seen) <> d.seen;
        END IF;
    END LOOP;
END $$;

-- ----------------------------------------------------------------------------- streams' chatters

-- One stream's chatters counted again: whole UTC hours from analytics_chatters, the edges from
-- the raw messages (a live stream: every hour from its start on).
CREATE FUNCTION analytics_session_chatter_counts(p_channel text, p_lo timestamptz, p_hi timestamptz)
RETURNS TABLE (user_id text, user_login text, messages bigint)
LANGUAGE sql STABLE AS $$
    WITH b AS (
        SELECT date_bin('1 hour', p_lo, timestamptz 'epoch')
               + CASE WHEN date_bin('1 hour', p_lo, timestamptz 'epoch') = p_lo THEN interval '0'
                      ELSE interval '1 hour' END AS a,
               CASE WHEN p_hi = 'infinity' THEN p_hi
                    ELSE date_bin('1 hour', p_hi, timestamptz 'epoch') END AS z),
    edges AS (
        SELECT b.a, greatest(b.a, b.z) AS z FROM b)
    SELECT x.user_id, max(x.user_login), sum(x.messages)::bigint
      FROM edges e CROSS JOIN LATERAL (
           SELECT c.user_id, c.user_login, c.messages FROM analytics_chatters c
            WHERE c.channel_id = p_channel AND c.hour >= e.a AND c.hour < e.z
           UNION ALL
           SELECT f.chatter_id, f.chatter_login, 1
             FROM analytics_raw_activity(p_channel, p_lo, least(e.a, p_hi)) f
            WHERE f.chatter_id IS NOT NULL
           UNION ALL
           SELECT f.chatter_id, f.chatter_login, 1
             FROM analytics_raw_activity(p_channel, greatest(e.z, p_lo), p_hi) f
            WHERE f.chatter_id IS NOT NULL AND e.z < p_hi) x
     GROUP BY 1
$$;

-- What subscriptions, cheers and Bits uses add to their stream's supporters (s = +1 / -1).
CREATE FUNCTION analytics_supporter_facts(r twitch_subscriptions, s integer)
RETURNS analytics_supporter_fact LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN r.user_id IS NOT NULL AND NOT r.is_anonymous
                     AND NOT (r.kind = 'sub' AND r.is_gift) AND r.kind <> 'end' THEN
        ROW(r.channel_id, r.occurred_at, r.user_id, r.user_login,
            s * (r.kind IN ('sub', 'resub'))::integer::bigint,
            s * CASE WHEN r.kind = 'gift' THEN coalesce(r.gift_total, 1) ELSE 0 END::bigint, 0, s)
            ::analytics_supporter_fact END
$$;

CREATE FUNCTION analytics_supporter_facts(r twitch_cheers, s integer)
RETURNS analytics_supporter_fact LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN r.user_id IS NOT NULL AND NOT r.is_anonymous THEN
        ROW(r.channel_id, r.occurred_at, r.user_id, r.user_login, 0, 0, s * r.bits::bigint, s)
            ::analytics_supporter_fact END
$$;

-- Power-ups and combos (channel.bits.use's cheers are the channel.cheer rows above).
CREATE FUNCTION analytics_supporter_facts(t text, channel text, at timestamptz, e jsonb)
RETURNS analytics_supporter_fact LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN t = 'channel.bits.use' AND e ->> 'type' IN ('power_up', 'combo')
                     AND e ->> 'bits' ~ '^[0-9]{1,9}$' THEN
        ROW(channel, at, e ->> 'user_id', e ->> 'user_login', 0, 0, (e ->> 'bits')::bigint, 1)
            ::analytics_supporter_fact END
$$;

-- One channel's supporter facts in [lo, hi), from the typed rows and the raw log.
CREATE FUNCTION analytics_raw_supporters(p_channel text, p_lo timestamptz, p_hi timestamptz)
RETURNS SETOF analytics_supporter_fact LANGUAGE sql STABLE AS $$
    SELECT (x.f).* FROM (
        SELECT analytics_supporter_facts(t, 1) f FROM twitch_subscriptions t
         WHERE t.channel_id = p_channel AND t.occurred_at >= p_lo AND t.occurred_at < p_hi
        UNION ALL
        SELECT analytics_supporter_facts(t, 1) FROM twitch_cheers t
         WHERE t.channel_id = p_channel AND t.occurred_at >= p_lo AND t.occurred_at < p_hi
        UNION ALL
        SELECT analytics_supporter_facts(e.subscription_type, e.channel_id, e.occurred_at,
                                         e.payload -> 'event')
          FROM twitch_events e
         WHERE e.subscription_type = 'channel.bits.use' AND e.channel_id = p_channel
           AND e.occurred_at >= p_lo AND e.occurred_at < p_hi) x
     WHERE (x.f).user_id IS NOT NULL
$$;

-- The ended stream each fact falls in (channel, instant → stream), for a statement's facts at
-- once: the streams started from the latest one by the earliest fact to the latest fact (one
-- index range scan per channel, as 0003's event counters find theirs). A fact belongs to the
-- latest stream started at or before it, unless that one had ended; a live stream's facts are
-- left out (counted when it ends).
CREATE FUNCTION analytics_ended_streams_of(p_channels text[], p_ats timestamptz[])
RETURNS TABLE (i integer, stream_id text)
LANGUAGE sql STABLE AS $$
    WITH f AS (SELECT c, at, i FROM unnest(p_channels, p_ats) WITH ORDINALITY k(c, at, i)),
    span AS (SELECT f.c, min(f.at) AS lo, max(f.at) AS hi FROM f GROUP BY 1),
    candidates AS (
        SELECT x.channel_id, x.stream_id, x.started_at, x.ended_at,
               lead(x.started_at) OVER (PARTITION BY x.channel_id
                                        ORDER BY x.started_at, x.stream_id) AS next_start
          FROM span
         CROSS JOIN LATERAL (
               SELECT x.channel_id, x.stream_id, x.started_at, x.ended_at FROM stream_sessions x
                WHERE x.channel_id = span.c AND x.started_at <= span.hi
                  AND x.started_at >= coalesce((SELECT max(y.started_at) FROM stream_sessions y
                                                 WHERE y.channel_id = span.c
                                                   AND y.started_at <= span.lo), '-infinity')
               OFFSET 0) x)             -- index range scans, whatever the statistics say
    SELECT f.i::integer, s.stream_id
      FROM f JOIN candidates s ON s.channel_id = f.c AND f.at >= s.started_at
       AND (s.next_start IS NULL OR f.at < s.next_start)
       AND s.ended_at IS NOT NULL AND f.at < s.ended_at
$$;

-- Add (or take back) supporter facts to the streams they fall in, in lock order.
CREATE FUNCTION analytics_apply_supporters(facts analytics_supporter_fact[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF coalesce(cardinality(facts), 0) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO analytics_session_supporters AS c
           (channel_id, stream_id, user_id, user_login, subs, gifted, bits, events)
    SELECT f.channel_id, s.stream_id, f.user_id, max(f.user_login), sum(f.subs), sum(f.gifted),
           sum(f.bits), sum(f.events)
      FROM unnest(facts) WITH ORDINALITY f
      JOIN analytics_ended_streams_of(ARRAY(SELECT x.channel_id FROM unnest(facts) x),
                                      ARRAY(SELECT x.at FROM unnest(facts) x)) s
        ON s.i = f.ordinality
     WHERE f.user_id IS NOT NULL
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3
    ON CONFLICT (channel_id, stream_id, user_id) DO UPDATE SET
           subs = c.subs + excluded.subs, gifted = c.gifted + excluded.gifted,
           bits = c.bits + excluded.bits, events = c.events + excluded.events,
           user_login = greatest(c.user_login, excluded.user_login);
END $$;

CREATE FUNCTION analytics_subscription_supporters_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM analytics_apply_supporters(ARRAY(
            SELECT f FROM (SELECT analytics_supporter_facts(o::twitch_subscriptions, -1) f
                             FROM old_rows o) x WHERE (f).user_id IS NOT NULL));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM analytics_apply_supporters(ARRAY(
            SELECT f FROM (SELECT analytics_supporter_facts(n::twitch_subscriptions, 1) f
                             FROM new_rows n) x WHERE (f).user_id IS NOT NULL));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION analytics_cheer_supporters_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM analytics_apply_supporters(ARRAY(
            SELECT f FROM (SELECT analytics_supporter_facts(o::twitch_cheers, -1) f
                             FROM old_rows o) x WHERE (f).user_id IS NOT NULL));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM analytics_apply_supporters(ARRAY(
            SELECT f FROM (SELECT analytics_supporter_facts(n::twitch_cheers, 1) f
                             FROM new_rows n) x WHERE (f).user_id IS NOT NULL));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_subscription_supporters_ins AFTER INSERT ON twitch_subscriptions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_subscription_supporters_changed();
CREATE TRIGGER analytics_subscription_supporters_upd AFTER UPDATE ON twitch_subscriptions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_subscription_supporters_changed();
CREATE TRIGGER analytics_subscription_supporters_del AFTER DELETE ON twitch_subscriptions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_subscription_supporters_changed();
CREATE TRIGGER analytics_cheer_supporters_ins AFTER INSERT ON twitch_cheers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_cheer_supporters_changed();
CREATE TRIGGER analytics_cheer_supporters_upd AFTER UPDATE ON twitch_cheers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_cheer_supporters_changed();
CREATE TRIGGER analytics_cheer_supporters_del AFTER DELETE ON twitch_cheers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_cheer_supporters_changed();

-- Raw rows: the activity of 0008, and the Power-ups and combos of the streams' supporters.
CREATE OR REPLACE FUNCTION analytics_events_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
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
    PERFORM analytics_apply_supporters(ARRAY(
        SELECT f FROM (SELECT analytics_supporter_facts(n.subscription_type, n.channel_id,
                                                        n.occurred_at, n.payload -> 'event') f
                         FROM new_rows n WHERE n.subscription_type = 'channel.bits.use') x
         WHERE (f).user_id IS NOT NULL));
    RETURN NULL;
END $$;

CREATE FUNCTION analytics_refresh_session_rollups(p_channels text[], p_streams text[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM analytics_session_chatters c
     USING unnest(p_channels, p_streams) k(ch, st)
     WHERE c.channel_id = k.ch AND c.stream_id = k.st;
    DELETE FROM analytics_session_supporters c
     USING unnest(p_channels, p_streams) k(ch, st)
     WHERE c.channel_id = k.ch AND c.stream_id = k.st;
    INSERT INTO analytics_session_chatters (channel_id, stream_id, user_id, user_login, messages)
    SELECT w.channel_id, w.stream_id, x.user_id, x.user_login, x.messages
      FROM analytics_session_windows(p_channels, p_streams) w
     CROSS JOIN LATERAL analytics_session_chatter_counts(
           w.channel_id, w.started_at,
           least(w.ended_at, coalesce(w.next_start, 'infinity'))) x
     WHERE w.ended_at IS NOT NULL
     ORDER BY 1, 2, 3;
    INSERT INTO analytics_session_supporters
           (channel_id, stream_id, user_id, user_login, subs, gifted, bits, events)
    SELECT w.channel_id, w.stream_id, x.user_id, max(x.user_login), sum(x.subs), sum(x.gifted),
           sum(x.bits), sum(x.events)
      FROM analytics_session_windows(p_channels, p_streams) w
     CROSS JOIN LATERAL analytics_raw_supporters(
           w.channel_id, w.started_at,
           least(w.ended_at, coalesce(w.next_start, 'infinity'))) x
     WHERE w.ended_at IS NOT NULL
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3;
END $$;

-- A stream's window moved (opened, reopened, ended, settled) or it is gone: recount its chatters
-- and supporters.
CREATE FUNCTION analytics_session_bounds_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM analytics_session_chatters c
         WHERE c.channel_id = OLD.channel_id AND c.stream_id = OLD.stream_id;
        DELETE FROM analytics_session_supporters c
         WHERE c.channel_id = OLD.channel_id AND c.stream_id = OLD.stream_id;
        RETURN NULL;
    END IF;
    PERFORM analytics_refresh_session_rollups(ARRAY[NEW.channel_id], ARRAY[NEW.stream_id]);
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_session_chatters_ins AFTER INSERT ON stream_sessions
    FOR EACH ROW EXECUTE FUNCTION analytics_session_bounds_changed();
CREATE TRIGGER analytics_session_chatters_upd AFTER UPDATE OF started_at, ended_at ON stream_sessions
    FOR EACH ROW WHEN (OLD.started_at IS DISTINCT FROM NEW.started_at
                       OR OLD.ended_at IS DISTINCT FROM NEW.ended_at)
    EXECUTE FUNCTION analytics_session_bounds_changed();
CREATE TRIGGER analytics_session_chatters_del AFTER DELETE ON stream_sessions
    FOR EACH ROW EXECUTE FUNCTION analytics_session_bounds_changed();

-- ----------------------------------------------------------------------------- the trigger's work

-- Add facts to the rollups (minute to day), the chatter tables and the streams' chatters, in
-- lock order (never a deadlock).
CREATE OR REPLACE FUNCTION analytics_apply_activity(facts analytics_activity_fact[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF coalesce(cardinality(facts), 0) = 0 THEN
        RETURN;
    END IF;
    WITH minutes AS (
        SELECT f.channel_id, date_bin('1 minute', f.at, timestamptz 'epoch') AS at,
               sum(f.chat_messages) AS chat_messages, sum(f.bits_power_up) AS bits_power_up,
               sum(f.bits_combo) AS bits_combo, sum(f.bits_use_cheer) AS bits_use_cheer,
               sum(f.ad_breaks) AS ad_breaks, sum(f.ad_seconds) AS ad_seconds,
               sum(f.shoutouts_in) AS shoutouts_in, sum(f.shoutout_viewers) AS shoutout_viewers,
               sum(f.charity_donations) AS charity_donations, sum(f.charity_amount) AS charity_amount
          FROM unnest(facts) f GROUP BY 1, 2)
    INSERT INTO analytics_activity_rollup AS r
           (channel_id, res, bucket, chat_messages, bits_power_up, bits_combo, bits_use_cheer,
            ad_breaks, ad_seconds, shoutouts_in, shoutout_viewers, charity_donations, charity_amount)
    SELECT f.channel_id, l.res, date_bin(l.stride, f.at, timestamptz 'epoch'),
           sum(f.chat_messages), sum(f.bits_power_up), sum(f.bits_combo), sum(f.bits_use_cheer),
           sum(f.ad_breaks), sum(f.ad_seconds), sum(f.shoutouts_in), sum(f.shoutout_viewers),
           sum(f.charity_donations), sum(f.charity_amount)
      FROM minutes f
     CROSS JOIN (VALUES (60, interval '1 minute'), (900, interval '15 minutes'),
                        (3600, interval '1 hour'), (86400, interval '1 day')) l(res, stride)
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
       FROM (SELECT DISTINCT ON (channel_id, chatter_id, date_bin('1 minute', at, timestamptz 'epoch'))
                    channel_id, chatter_id, at
               FROM unnest(facts) WHERE chatter_id IS NOT NULL
              ORDER BY channel_id, chatter_id, date_bin('1 minute', at, timestamptz 'epoch'), at) f;
    INSERT INTO analytics_chatters AS c (channel_id, hour, chatter, user_id, user_login, messages)
    SELECT f.channel_id, date_bin('1 hour', f.at, timestamptz 'epoch'), k.id, f.chatter_id,
           max(f.chatter_login), count(*)
      FROM unnest(facts) f
      JOIN analytics_chatter_ids k ON k.channel_id = f.channel_id AND k.user_id = f.chatter_id
     GROUP BY 1, 2, 3, 4
     ORDER BY 1, 2, 3
    ON CONFLICT (channel_id, hour, chatter) DO UPDATE SET
           messages = c.messages + excluded.messages, user_login = excluded.user_login;
    -- Streams never overlap (a session ends by the next one's start): a message belongs to the
    -- latest stream started at or before it, unless that one had ended. Only ended streams keep
    -- their chatters here (a message of a live one would cost a row write; its end counts them).
    INSERT INTO analytics_session_chatters AS c (channel_id, stream_id, user_id, user_login, messages)
    SELECT f.channel_id, s.stream_id, f.chatter_id, max(f.chatter_login), count(*)
      FROM unnest(facts) WITH ORDINALITY f
      JOIN analytics_ended_streams_of(ARRAY(SELECT x.channel_id FROM unnest(facts) x),
                                      ARRAY(SELECT x.at FROM unnest(facts) x)) s
        ON s.i = f.ordinality
     WHERE f.chatter_id IS NOT NULL
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3
    ON CONFLICT (channel_id, stream_id, user_id) DO UPDATE SET
           messages = c.messages + excluded.messages, user_login = excluded.user_login;
END $$;

-- ----------------------------------------------------------------------------- rebuild

-- Every ended stream's window for its chatters and supporters: [start, end), never past the
-- next stream's start.
CREATE FUNCTION analytics_all_session_windows(p_channel text)
RETURNS TABLE (channel_id text, stream_id text, lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.channel_id, s.stream_id, s.started_at,
           least(s.ended_at, coalesce(s.next_start, 'infinity'))
      FROM (SELECT s.*, lead(s.started_at) OVER (PARTITION BY s.channel_id
                                                 ORDER BY s.started_at, s.stream_id) AS next_start
              FROM stream_sessions s WHERE p_channel IS NULL OR s.channel_id = p_channel) s
     WHERE s.ended_at IS NOT NULL
$$;

-- Every stream's chatters and supporters counted again (after analytics_chatters is right). With
-- p_chatters false, the supporters only (the rebuild counts the chatters from its own table).
CREATE FUNCTION analytics_fill_session_rollups(p_channel text DEFAULT NULL,
                                               p_chatters boolean DEFAULT true) RETURNS void
LANGUAGE plpgsql SET work_mem = '256MB' AS $$
BEGIN
    IF p_chatters THEN
        DELETE FROM analytics_session_chatters WHERE p_channel IS NULL OR channel_id = p_channel;
    END IF;
    DELETE FROM analytics_session_supporters WHERE p_channel IS NULL OR channel_id = p_channel;
    CREATE TEMP TABLE analytics_fill_windows ON COMMIT DROP AS
    SELECT * FROM analytics_all_session_windows(p_channel);
    IF p_chatters THEN
        INSERT INTO analytics_session_chatters (channel_id, stream_id, user_id, user_login, messages)
        SELECT w.channel_id, w.stream_id, x.user_id, x.user_login, x.messages
          FROM analytics_fill_windows w
         CROSS JOIN LATERAL analytics_session_chatter_counts(w.channel_id, w.lo, w.hi) x;
    END IF;
    INSERT INTO analytics_session_supporters
           (channel_id, stream_id, user_id, user_login, subs, gifted, bits, events)
    SELECT w.channel_id, w.stream_id, x.user_id, max(x.user_login), sum(x.subs), sum(x.gifted),
           sum(x.bits), sum(x.events)
      FROM analytics_fill_windows w
     CROSS JOIN LATERAL analytics_raw_supporters(w.channel_id, w.lo, w.hi) x
     GROUP BY 1, 2, 3;
    DROP TABLE analytics_fill_windows;
END $$;

-- The minute/quarter/hour bitmaps and the streams' chatters and supporters, from
-- analytics_chatters and the raw log (after analytics_chatters and analytics_chatter_ids are right).
CREATE FUNCTION analytics_fill_chatter_sets(p_channel text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET work_mem = '256MB' AS $$
BEGIN
    DELETE FROM analytics_chatter_sets WHERE p_channel IS NULL OR channel_id = p_channel;
    -- minutes and quarters: the raw messages, by chatter id
    INSERT INTO analytics_chatter_sets (channel_id, res, bucket, seen)
    SELECT x.channel_id, l.res, date_bin(l.stride, x.minute, timestamptz 'epoch'),
           analytics_bits_of(array_agg(x.id))
      FROM (SELECT DISTINCT f.channel_id, date_bin('1 minute', f.at, timestamptz 'epoch') AS minute, k.id
              FROM (SELECT (y.f).* FROM (
                        SELECT analytics_activity_facts(e.subscription_type, e.channel_id,
                                                        e.occurred_at, e.payload -> 'event') f
                          FROM twitch_events e
                         WHERE e.subscription_type = 'channel.chat.message'
                           AND (p_channel IS NULL OR e.channel_id = p_channel)) y
                     WHERE (y.f).chatter_id IS NOT NULL) f
              JOIN analytics_chatter_ids k ON k.channel_id = f.channel_id AND k.user_id = f.chatter_id) x
     CROSS JOIN (VALUES (60, interval '1 minute'), (900, interval '15 minutes')) l(res, stride)
     GROUP BY 1, 2, 3;
    -- hours: analytics_chatters (kept when the chat text is removed)
    INSERT INTO analytics_chatter_sets (channel_id, res, bucket, seen)
    SELECT channel_id, 3600, hour, analytics_bits_of(array_agg(chatter))
      FROM analytics_chatters
     WHERE p_channel IS NULL OR channel_id = p_channel
     GROUP BY 1, 3;
    PERFORM analytics_fill_session_rollups(p_channel);
END $$;

-- Recompute the activity rollups and chatters from the raw rows, set-based (a bulk load, and
-- migrations). Only right while the log is whole: chat text removed by retention is gone from
-- the raw rows but not from the rollups, which the triggers only ever add to.
CREATE OR REPLACE FUNCTION analytics_activity_rebuild(p_channel text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET work_mem = '256MB' AS $$
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
    -- per minute first: the coarser levels sum a few hundred thousand rows, not every message
    INSERT INTO analytics_activity_rollup
           (channel_id, res, bucket, chat_messages, bits_power_up, bits_combo, bits_use_cheer,
            ad_breaks, ad_seconds, shoutouts_in, shoutout_viewers, charity_donations, charity_amount)
    SELECT f.channel_id, l.res, date_bin(l.stride, f.at, timestamptz 'epoch'),
           sum(f.chat_messages), sum(f.bits_power_up), sum(f.bits_combo), sum(f.bits_use_cheer),
           sum(f.ad_breaks), sum(f.ad_seconds), sum(f.shoutouts_in), sum(f.shoutout_viewers),
           sum(f.charity_donations), sum(f.charity_amount)
      FROM (SELECT channel_id, date_bin('1 minute', at, timestamptz 'epoch') AS at,
                   sum(chat_messages) AS chat_messages, sum(bits_power_up) AS bits_power_up,
                   sum(bits_combo) AS bits_combo, sum(bits_use_cheer) AS bits_use_cheer,
                   sum(ad_breaks) AS ad_breaks, sum(ad_seconds) AS ad_seconds,
                   sum(shoutouts_in) AS shoutouts_in, sum(shoutout_viewers) AS shoutout_viewers,
                   sum(charity_donations) AS charity_donations, sum(charity_amount) AS charity_amount
              FROM analytics_rebuild_facts GROUP BY 1, 2) f
     CROSS JOIN (VALUES (60, interval '1 minute'), (900, interval '15 minutes'),
                        (3600, interval '1 hour'), (86400, interval '1 day')) l(res, stride)
     GROUP BY 1, 2, 3;
    DELETE FROM analytics_chatter_days WHERE p_channel IS NULL OR channel_id = p_channel;
    DELETE FROM analytics_chatter_sets WHERE p_channel IS NULL OR channel_id = p_channel;
    DELETE FROM analytics_chatter_ids WHERE p_channel IS NULL OR channel_id = p_channel;
    INSERT INTO analytics_chatter_ids (channel_id, user_id, id, first_at)
    SELECT channel_id, chatter_id,
           row_number() OVER (PARTITION BY channel_id ORDER BY min(at), chatter_id) - 1, min(at)
      FROM analytics_rebuild_facts WHERE chatter_id IS NOT NULL
     GROUP BY channel_id, chatter_id;
    -- each message with its chatter's id, once
    CREATE TEMP TABLE analytics_rebuild_chat ON COMMIT DROP AS
    SELECT f.channel_id, f.at, k.id, f.chatter_id, f.chatter_login
      FROM analytics_rebuild_facts f
      JOIN analytics_chatter_ids k ON k.channel_id = f.channel_id AND k.user_id = f.chatter_id;
    DROP TABLE analytics_rebuild_facts;
    INSERT INTO analytics_chatters (channel_id, hour, chatter, user_id, user_login, messages)
    SELECT channel_id, date_bin('1 hour', at, timestamptz 'epoch'), id, max(chatter_id),
           max(chatter_login), count(*)
      FROM analytics_rebuild_chat
     GROUP BY 1, 2, 3;
    INSERT INTO analytics_chatter_sets (channel_id, res, bucket, seen)
    SELECT channel_id, l.res, date_bin(l.stride, at, timestamptz 'epoch'), analytics_bits_of(array_agg(id))
      FROM analytics_rebuild_chat
     CROSS JOIN (VALUES (60, interval '1 minute'), (900, interval '15 minutes')) l(res, stride)
     GROUP BY 1, 2, 3;
    -- each stream's chatters: its messages found by hour (a hash join), then by instant
    DELETE FROM analytics_session_chatters WHERE p_channel IS NULL OR channel_id = p_channel;
    INSERT INTO analytics_session_chatters (channel_id, stream_id, user_id, user_login, messages)
    SELECT w.channel_id, w.stream_id, c.chatter_id, max(c.chatter_login), count(*)
      FROM (SELECT w.*, h.h
              FROM analytics_all_session_windows(p_channel) w
             CROSS JOIN LATERAL generate_series(
                   date_bin('1 hour', w.lo, timestamptz 'epoch'),
                   least(w.hi, (SELECT max(at) FROM analytics_rebuild_chat)),
                   interval '1 hour') h(h)) w
      JOIN analytics_rebuild_chat c
        ON c.channel_id = w.channel_id AND date_bin('1 hour', c.at, timestamptz 'epoch') = w.h
     WHERE c.at >= w.lo AND c.at < w.hi
     GROUP BY 1, 2, 3;
    DROP TABLE analytics_rebuild_chat;
    INSERT INTO analytics_chatter_sets (channel_id, res, bucket, seen)
    SELECT channel_id, 3600, hour, analytics_bits_of(array_agg(chatter))
      FROM analytics_chatters
     WHERE p_channel IS NULL OR channel_id = p_channel
     GROUP BY 1, 3;
    INSERT INTO analytics_chatter_days (channel_id, day, seen)
    SELECT channel_id, date_bin('1 day', bucket, timestamptz 'epoch'), analytics_union(seen)
      FROM analytics_chatter_sets
     WHERE res = 3600 AND (p_channel IS NULL OR channel_id = p_channel)
     GROUP BY 1, 2;
    PERFORM analytics_fill_session_rollups(p_channel, false);
END $$;

DROP FUNCTION analytics_set_bits(varbit, integer[]);

-- ----------------------------------------------------------------------------- the history

-- The minute level of the activity rollup, from the raw log (where retention removed chat text
-- the minutes stay empty: edges read the raw log there before this migration too).
INSERT INTO analytics_activity_rollup
       (channel_id, res, bucket, chat_messages, bits_power_up, bits_combo, bits_use_cheer,
        ad_breaks, ad_seconds, shoutouts_in, shoutout_viewers, charity_donations, charity_amount)
SELECT f.channel_id, 60, date_bin('1 minute', f.at, timestamptz 'epoch'),
       sum(f.chat_messages), sum(f.bits_power_up), sum(f.bits_combo), sum(f.bits_use_cheer),
       sum(f.ad_breaks), sum(f.ad_seconds), sum(f.shoutouts_in), sum(f.shoutout_viewers),
       sum(f.charity_donations), sum(f.charity_amount)
  FROM (SELECT (x.f).* FROM (
            SELECT analytics_activity_facts(e.subscription_type, e.channel_id, e.occurred_at,
                                            e.payload -> 'event') f
              FROM twitch_events e
             WHERE e.subscription_type IN ('channel.chat.message', 'channel.bits.use',
                                           'channel.ad_break.begin', 'channel.shoutout.receive',
                                           'channel.charity_campaign.donate')) x
         WHERE (x.f).channel_id IS NOT NULL) f
 GROUP BY 1, 3;

SELECT analytics_fill_chatter_sets();
