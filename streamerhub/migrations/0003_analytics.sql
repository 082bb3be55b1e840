-- 0003: analytics. Viewer samples, follower/subscriber totals snapshots, stream sessions, and
-- rollups kept up to date by PostgreSQL itself (statement-level triggers with transition tables),
-- so they stay right whatever writes the typed rows: live events, a replayed spool, a backfill.
--
-- Rollups are kept at three UTC resolutions (15 min, 1 h, 1 day). A bucket in the streamer's
-- zone is any range of instants; streamerhub/analytics/periods.py cuts it into whole days, whole
-- hours and whole quarters (every zone's offset is a multiple of 15 min), plus, for an unaligned
-- edge, a raw fragment read from the typed tables. analytics_rebuild() recomputes everything
-- from the raw rows; the tests prove incremental = rebuilt = naive.

-- ----------------------------------------------------------------------------- tables

-- One row per Helix GET /streams observation of a live channel.
CREATE TABLE viewer_samples (
    channel_id    text NOT NULL,
    stream_id     text NOT NULL,
    sampled_at    timestamptz NOT NULL CHECK (sampled_at = date_trunc('second', sampled_at)),
    viewer_count  integer NOT NULL CHECK (viewer_count >= 0),
    max_span_s    integer NOT NULL DEFAULT 90 CHECK (max_span_s BETWEEN 1 AND 900),  -- interval + slack
    span_s        integer NOT NULL DEFAULT 0,    -- maintained: seconds this sample counts for
    title         text,
    category_id   text,
    category_name text,
    PRIMARY KEY (channel_id, sampled_at)
);
CREATE INDEX viewer_samples_stream ON viewer_samples (channel_id, stream_id, sampled_at);
CREATE INDEX viewer_samples_time_brin ON viewer_samples USING brin (sampled_at);

-- Where samples are missing while a stream was live (derived from the samples; never interpolated).
CREATE TABLE viewer_sample_gaps (
    channel_id text NOT NULL,
    stream_id  text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL,
    reason     text NOT NULL CHECK (reason IN ('missed_samples', 'no_samples')),
    PRIMARY KEY (channel_id, stream_id, started_at)
);
CREATE INDEX viewer_sample_gaps_channel_time ON viewer_sample_gaps (channel_id, started_at);

-- Twitch's own totals every 15 min: the followers card shows Twitch's number, not our count.
CREATE TABLE twitch_totals (
    channel_id        text NOT NULL,
    taken_at          timestamptz NOT NULL,
    followers         integer,
    subscribers       integer,
    subscriber_points integer,
    PRIMARY KEY (channel_id, taken_at)
);

-- The nightly check: the followers total's change against the follow events stored.
CREATE TABLE follower_checks (
    channel_id     text NOT NULL,
    day            date NOT NULL,                 -- the streamer's day that was checked
    from_at        timestamptz NOT NULL,          -- the two snapshots compared
    to_at          timestamptz NOT NULL,
    total_from     integer NOT NULL,
    total_to       integer NOT NULL,
    follow_events  integer NOT NULL,              -- follows stored in [from_at, to_at)
    difference     integer NOT NULL,              -- (total_to - total_from) - follow_events
    checked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, day)
);

-- One row per Twitch stream, kept up to date while live.
CREATE TABLE stream_sessions (
    channel_id        text NOT NULL,
    stream_id         text NOT NULL,
    started_at        timestamptz NOT NULL,
    ended_at          timestamptz,                -- null while live
    start_source      text NOT NULL DEFAULT 'eventsub' CHECK (start_source IN ('eventsub', 'helix')),
    end_source        text CHECK (end_source IN ('offline', 'helix', 'next_stream')),
    -- events in [started_at, ended_at)
    follows           integer NOT NULL DEFAULT 0,
    subs_new          integer NOT NULL DEFAULT 0,
    subs_resub        integer NOT NULL DEFAULT 0,
    subs_gifted       integer NOT NULL DEFAULT 0,
    sub_ends          integer NOT NULL DEFAULT 0,
    cheers            integer NOT NULL DEFAULT 0,
    bits              bigint NOT NULL DEFAULT 0,
    raids_in          integer NOT NULL DEFAULT 0,
    raid_viewers_in   bigint NOT NULL DEFAULT 0,
    raids_out         integer NOT NULL DEFAULT 0,
    -- this stream's viewer samples
    viewer_s          bigint NOT NULL DEFAULT 0,  -- Σ viewers × span: watch time in viewer-seconds
    sampled_s         bigint NOT NULL DEFAULT 0,  -- Σ span: the live time the samples cover
    peak_viewers      integer NOT NULL DEFAULT 0,
    samples           integer NOT NULL DEFAULT 0,
    last_viewer_count integer,
    last_sample_at    timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, stream_id)
) WITH (fillfactor = 80);
CREATE INDEX stream_sessions_channel_start ON stream_sessions (channel_id, started_at);
CREATE INDEX stream_sessions_open ON stream_sessions (channel_id) WHERE ended_at IS NULL;

CREATE TABLE analytics_event_rollup (
    channel_id      text NOT NULL,
    res             integer NOT NULL CHECK (res IN (900, 3600, 86400)),
    bucket          timestamptz NOT NULL,         -- UTC-aligned start of the res-second bucket
    follows         integer NOT NULL DEFAULT 0,
    subs_new        integer NOT NULL DEFAULT 0,   -- channel.subscribe that is not a gift
    subs_resub      integer NOT NULL DEFAULT 0,   -- channel.subscription.message
    subs_gifted     integer NOT NULL DEFAULT 0,   -- Σ total of channel.subscription.gift
    sub_ends        integer NOT NULL DEFAULT 0,
    cheers          integer NOT NULL DEFAULT 0,
    bits            bigint NOT NULL DEFAULT 0,
    raids_in        integer NOT NULL DEFAULT 0,
    raid_viewers_in bigint NOT NULL DEFAULT 0,
    raids_out       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, res, bucket)
) WITH (fillfactor = 70);                         -- room for HOT updates of hot buckets

CREATE TABLE analytics_viewer_rollup (
    channel_id text NOT NULL,
    res        integer NOT NULL CHECK (res IN (900, 3600, 86400)),
    bucket     timestamptz NOT NULL,
    viewer_s   bigint NOT NULL DEFAULT 0,         -- viewer-seconds inside the bucket
    live_s     bigint NOT NULL DEFAULT 0,         -- sampled live seconds inside the bucket
    peak       integer NOT NULL DEFAULT 0,        -- max viewers of samples touching the bucket
    samples    integer NOT NULL DEFAULT 0,        -- samples taken inside the bucket
    PRIMARY KEY (channel_id, res, bucket)
);

-- Exports of every channel by time range.
CREATE INDEX twitch_events_time_brin ON twitch_events USING brin (occurred_at);

-- ----------------------------------------------------------------------------- event facts

-- What one typed row adds to the counters (s = +1 to add, -1 to remove). Defined once per
-- table and used by the triggers, the raw fragments and the rebuild.
CREATE TYPE analytics_event_fact AS (
    channel_id text, at timestamptz, follows integer, subs_new integer, subs_resub integer,
    subs_gifted integer, sub_ends integer, cheers integer, bits bigint, raids_in integer,
    raid_viewers_in bigint, raids_out integer);

CREATE FUNCTION analytics_facts(r twitch_follows, s integer) RETURNS analytics_event_fact
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ROW(r.channel_id, r.followed_at, s, 0, 0, 0, 0, 0, 0, 0, 0, 0)::analytics_event_fact
$$;

CREATE FUNCTION analytics_facts(r twitch_subscriptions, s integer) RETURNS analytics_event_fact
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ROW(r.channel_id, r.occurred_at, 0,
               s * (r.kind = 'sub' AND NOT r.is_gift)::integer,
               s * (r.kind = 'resub')::integer,
               s * CASE WHEN r.kind = 'gift' THEN coalesce(r.gift_total, 1) ELSE 0 END,
               s * (r.kind = 'end')::integer,
               0, 0, 0, 0, 0)::analytics_event_fact
$$;

CREATE FUNCTION analytics_facts(r twitch_cheers, s integer) RETURNS analytics_event_fact
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ROW(r.channel_id, r.occurred_at, 0, 0, 0, 0, 0, s, s * r.bits::bigint, 0, 0, 0)
           ::analytics_event_fact
$$;

CREATE FUNCTION analytics_facts(r twitch_raids, s integer) RETURNS analytics_event_fact
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ROW(r.channel_id, r.occurred_at, 0, 0, 0, 0, 0, 0, 0,
               s * (r.to_user_id = r.channel_id)::integer,
               s * CASE WHEN r.to_user_id = r.channel_id THEN r.viewers::bigint ELSE 0 END,
               s * (r.from_user_id = r.channel_id)::integer)::analytics_event_fact
$$;

-- The facts of one channel's typed rows in [lo, hi), read straight from the typed tables.
CREATE FUNCTION analytics_raw_events(p_channel text, p_lo timestamptz, p_hi timestamptz)
RETURNS SETOF analytics_event_fact LANGUAGE sql STABLE AS $$
    SELECT (analytics_facts(t, 1)).* FROM twitch_follows t
     WHERE t.channel_id = p_channel AND t.followed_at >= p_lo AND t.followed_at < p_hi
    UNION ALL
    SELECT (analytics_facts(t, 1)).* FROM twitch_subscriptions t
     WHERE t.channel_id = p_channel AND t.occurred_at >= p_lo AND t.occurred_at < p_hi
    UNION ALL
    SELECT (analytics_facts(t, 1)).* FROM twitch_cheers t
     WHERE t.channel_id = p_channel AND t.occurred_at >= p_lo AND t.occurred_at < p_hi
    UNION ALL
    SELECT (analytics_facts(t, 1)).* FROM twitch_raids t
     WHERE t.channel_id = p_channel AND t.occurred_at >= p_lo AND t.occurred_at < p_hi
$$;

-- Add (or, with negative facts, remove) facts: the three rollup levels and the live session,
-- in one statement (the trigger's fixed cost is what batches of a few events pay for). A
-- generic plan: PostgreSQL otherwise re-plans it for every batch, which cost more than running it.
CREATE FUNCTION analytics_apply_events(facts analytics_event_fact[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF coalesce(cardinality(facts), 0) = 0 THEN
        RETURN;
    END IF;
    WITH f AS (SELECT * FROM unnest(facts)),
    quarters AS (
        SELECT f.channel_id, date_bin('15 minutes', f.at, timestamptz 'epoch') AS at,
               sum(f.follows) AS follows, sum(f.subs_new) AS subs_new,
               sum(f.subs_resub) AS subs_resub, sum(f.subs_gifted) AS subs_gifted,
               sum(f.sub_ends) AS sub_ends, sum(f.cheers) AS cheers, sum(f.bits) AS bits,
               sum(f.raids_in) AS raids_in, sum(f.raid_viewers_in) AS raid_viewers_in,
               sum(f.raids_out) AS raids_out
          FROM f GROUP BY 1, 2),
    rollup AS (
        -- ORDER BY: concurrent writers lock rollup rows in the same order, never a deadlock.
        INSERT INTO analytics_event_rollup AS r
               (channel_id, res, bucket, follows, subs_new, subs_resub, subs_gifted, sub_ends,
                cheers, bits, raids_in, raid_viewers_in, raids_out)
        SELECT f.channel_id, l.res, date_bin(l.stride, f.at, timestamptz 'epoch'),
               sum(f.follows), sum(f.subs_new), sum(f.subs_resub), sum(f.subs_gifted),
               sum(f.sub_ends), sum(f.cheers), sum(f.bits), sum(f.raids_in),
               sum(f.raid_viewers_in), sum(f.raids_out)
          FROM quarters f
         CROSS JOIN (VALUES (900, interval '15 minutes'), (3600, interval '1 hour'),
                            (86400, interval '1 day')) l(res, stride)
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
        ON CONFLICT (channel_id, res, bucket) DO UPDATE SET
               follows = r.follows + excluded.follows,
               subs_new = r.subs_new + excluded.subs_new,
               subs_resub = r.subs_resub + excluded.subs_resub,
               subs_gifted = r.subs_gifted + excluded.subs_gifted,
               sub_ends = r.sub_ends + excluded.sub_ends,
               cheers = r.cheers + excluded.cheers,
               bits = r.bits + excluded.bits,
               raids_in = r.raids_in + excluded.raids_in,
               raid_viewers_in = r.raid_viewers_in + excluded.raid_viewers_in,
               raids_out = r.raids_out + excluded.raids_out),
    -- An event belongs to the latest session started at or before it, unless that one had
    -- ended. The candidates are found once per statement: the last sessions started by the
    -- earliest event (all of those sharing that start: lead() below gives each tie but the
    -- last an empty window; the index has no stream_id to find the last one alone), and those
    -- started between the earliest and the latest event.
    span AS (SELECT f.channel_id, min(f.at) AS lo, max(f.at) AS hi FROM f GROUP BY 1),
    candidates AS (
        SELECT c.channel_id, c.stream_id, c.started_at, c.ended_at,
               lead(c.started_at) OVER (PARTITION BY c.channel_id ORDER BY c.started_at, c.stream_id) AS next_start
          FROM span
         CROSS JOIN LATERAL (
               SELECT x.channel_id, x.stream_id, x.started_at, x.ended_at FROM stream_sessions x
                WHERE x.channel_id = span.channel_id AND x.started_at <= span.hi
                  AND x.started_at >= (SELECT max(y.started_at) FROM stream_sessions y
                                        WHERE y.channel_id = span.channel_id
                                          AND y.started_at <= span.lo)
               UNION ALL
               SELECT x.channel_id, x.stream_id, x.started_at, x.ended_at FROM stream_sessions x
                WHERE x.channel_id = span.channel_id AND x.started_at <= span.hi
                  AND NOT EXISTS (SELECT 1 FROM stream_sessions y
                                   WHERE y.channel_id = span.channel_id
                                     AND y.started_at <= span.lo)
               OFFSET 0) c),             -- index range scans, whatever the statistics say
    d AS (
        SELECT c.channel_id, c.stream_id, sum(f.follows) AS follows,
               sum(f.subs_new) AS subs_new, sum(f.subs_resub) AS subs_resub,
               sum(f.subs_gifted) AS subs_gifted, sum(f.sub_ends) AS sub_ends,
               sum(f.cheers) AS cheers, sum(f.bits) AS bits, sum(f.raids_in) AS raids_in,
               sum(f.raid_viewers_in) AS raid_viewers_in, sum(f.raids_out) AS raids_out
          FROM f JOIN candidates c ON c.channel_id = f.channel_id AND f.at >= c.started_at
           AND (c.next_start IS NULL OR f.at < c.next_start)
           AND (c.ended_at IS NULL OR f.at < c.ended_at)
         GROUP BY 1, 2)
    UPDATE stream_sessions s SET
           follows = s.follows + d.follows, subs_new = s.subs_new + d.subs_new,
           subs_resub = s.subs_resub + d.subs_resub, subs_gifted = s.subs_gifted + d.subs_gifted,
           sub_ends = s.sub_ends + d.sub_ends, cheers = s.cheers + d.cheers, bits = s.bits + d.bits,
           raids_in = s.raids_in + d.raids_in, raid_viewers_in = s.raid_viewers_in + d.raid_viewers_in,
           raids_out = s.raids_out + d.raids_out, updated_at = now()
      FROM d
     WHERE s.channel_id = d.channel_id AND s.stream_id = d.stream_id;
END $$;

-- Recompute the event rollups of the channels over the whole UTC days around [lo, hi], and the
-- event counters of the sessions there, from the typed rows. Statements of over 10,000 rows (bulk
-- loads, store.rebuild_typed's DELETE of a whole table) take this path instead of carrying every
-- row in an array.
CREATE FUNCTION analytics_resync_events(p_channels text[], p_lo timestamptz, p_hi timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz := date_bin('1 day', p_lo, timestamptz 'epoch');
    hi timestamptz := date_bin('1 day', p_hi, timestamptz 'epoch') + interval '1 day';
    c text;
BEGIN
    IF p_lo IS NULL THEN
        RETURN;
    END IF;
    FOREACH c IN ARRAY p_channels LOOP
        DELETE FROM analytics_event_rollup WHERE channel_id = c AND bucket >= lo AND bucket < hi;
        INSERT INTO analytics_event_rollup
               (channel_id, res, bucket, follows, subs_new, subs_resub, subs_gifted, sub_ends, cheers,
                bits, raids_in, raid_viewers_in, raids_out)
        SELECT f.channel_id, l.res, date_bin(l.stride, f.at, timestamptz 'epoch'),
               sum(f.follows), sum(f.subs_new), sum(f.subs_resub), sum(f.subs_gifted), sum(f.sub_ends),
               sum(f.cheers), sum(f.bits), sum(f.raids_in), sum(f.raid_viewers_in), sum(f.raids_out)
          FROM analytics_raw_events(c, lo, hi) f
         CROSS JOIN (VALUES (900, interval '15 minutes'), (3600, interval '1 hour'),
                            (86400, interval '1 day')) l(res, stride)
         GROUP BY 1, 2, 3;
        PERFORM analytics_refresh_session_events(array_agg(s.channel_id), array_agg(s.stream_id))
           FROM stream_sessions s
          WHERE s.channel_id = c AND s.started_at < hi AND (s.ended_at IS NULL OR s.ended_at > lo);
    END LOOP;
END $$;

-- One trigger function per counted table: map the transition rows to facts and apply them.
CREATE FUNCTION analytics_follows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM new_rows LIMIT 10001) x) > 10000 THEN
            PERFORM analytics_resync_events(array_agg(DISTINCT t.channel_id), min(t.followed_at), max(t.followed_at))
               FROM new_rows t;
        ELSE
            PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(n::twitch_follows, 1) FROM new_rows n));
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM old_rows LIMIT 10001) x) > 10000 THEN
            PERFORM analytics_resync_events(array_agg(DISTINCT t.channel_id), min(t.followed_at), max(t.followed_at))
               FROM old_rows t;
        ELSE
            PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(o::twitch_follows, -1) FROM old_rows o));
        END IF;
    ELSE
        PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(o::twitch_follows, -1) FROM old_rows o));
        PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(n::twitch_follows, 1) FROM new_rows n));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION analytics_subscriptions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM new_rows LIMIT 10001) x) > 10000 THEN
            PERFORM analytics_resync_events(array_agg(DISTINCT t.channel_id), min(t.occurred_at), max(t.occurred_at))
               FROM new_rows t;
        ELSE
            PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(n::twitch_subscriptions, 1) FROM new_rows n));
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM old_rows LIMIT 10001) x) > 10000 THEN
            PERFORM analytics_resync_events(array_agg(DISTINCT t.channel_id), min(t.occurred_at), max(t.occurred_at))
               FROM old_rows t;
        ELSE
            PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(o::twitch_subscriptions, -1) FROM old_rows o));
        END IF;
    ELSE
        PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(o::twitch_subscriptions, -1) FROM old_rows o));
        PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(n::twitch_subscriptions, 1) FROM new_rows n));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION analytics_cheers_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM new_rows LIMIT 10001) x) > 10000 THEN
            PERFORM analytics_resync_events(array_agg(DISTINCT t.channel_id), min(t.occurred_at), max(t.occurred_at))
               FROM new_rows t;
        ELSE
            PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(n::twitch_cheers, 1) FROM new_rows n));
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM old_rows LIMIT 10001) x) > 10000 THEN
            PERFORM analytics_resync_events(array_agg(DISTINCT t.channel_id), min(t.occurred_at), max(t.occurred_at))
               FROM old_rows t;
        ELSE
            PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(o::twitch_cheers, -1) FROM old_rows o));
        END IF;
    ELSE
        PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(o::twitch_cheers, -1) FROM old_rows o));
        PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(n::twitch_cheers, 1) FROM new_rows n));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION analytics_raids_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM new_rows LIMIT 10001) x) > 10000 THEN
            PERFORM analytics_resync_events(array_agg(DISTINCT t.channel_id), min(t.occurred_at), max(t.occurred_at))
               FROM new_rows t;
        ELSE
            PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(n::twitch_raids, 1) FROM new_rows n));
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM old_rows LIMIT 10001) x) > 10000 THEN
            PERFORM analytics_resync_events(array_agg(DISTINCT t.channel_id), min(t.occurred_at), max(t.occurred_at))
               FROM old_rows t;
        ELSE
            PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(o::twitch_raids, -1) FROM old_rows o));
        END IF;
    ELSE
        PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(o::twitch_raids, -1) FROM old_rows o));
        PERFORM analytics_apply_events(ARRAY(SELECT analytics_facts(n::twitch_raids, 1) FROM new_rows n));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_follows_ins AFTER INSERT ON twitch_follows
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_follows_changed();
CREATE TRIGGER analytics_follows_upd AFTER UPDATE ON twitch_follows
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_follows_changed();
CREATE TRIGGER analytics_follows_del AFTER DELETE ON twitch_follows
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_follows_changed();
CREATE TRIGGER analytics_subscriptions_ins AFTER INSERT ON twitch_subscriptions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_subscriptions_changed();
CREATE TRIGGER analytics_subscriptions_upd AFTER UPDATE ON twitch_subscriptions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_subscriptions_changed();
CREATE TRIGGER analytics_subscriptions_del AFTER DELETE ON twitch_subscriptions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_subscriptions_changed();
CREATE TRIGGER analytics_cheers_ins AFTER INSERT ON twitch_cheers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_cheers_changed();
CREATE TRIGGER analytics_cheers_upd AFTER UPDATE ON twitch_cheers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_cheers_changed();
CREATE TRIGGER analytics_cheers_del AFTER DELETE ON twitch_cheers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_cheers_changed();
CREATE TRIGGER analytics_raids_ins AFTER INSERT ON twitch_raids
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_raids_changed();
CREATE TRIGGER analytics_raids_upd AFTER UPDATE ON twitch_raids
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_raids_changed();
CREATE TRIGGER analytics_raids_del AFTER DELETE ON twitch_raids
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_raids_changed();

-- ----------------------------------------------------------------------------- viewer samples

-- Viewer totals of one channel's samples inside [lo, hi): each sample counts from its time for
-- span_s seconds, split exactly at the range edges; peak is over the samples touching the range.
CREATE FUNCTION analytics_raw_viewers(p_channel text, p_lo timestamptz, p_hi timestamptz,
                                      OUT viewer_s bigint, OUT live_s bigint, OUT peak integer,
                                      OUT samples integer)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(x.viewer_count::bigint * x.overlap), 0)::bigint,
           coalesce(sum(x.overlap), 0)::bigint,
           coalesce(max(x.viewer_count) FILTER (WHERE x.overlap > 0 OR x.sampled_at >= p_lo), 0),
           (count(*) FILTER (WHERE x.sampled_at >= p_lo))::integer
      FROM (SELECT s.viewer_count, s.sampled_at,
                   greatest(0, extract(epoch FROM
                       least(s.sampled_at + make_interval(secs => s.span_s), p_hi)
                       - greatest(s.sampled_at, p_lo)))::bigint AS overlap
              FROM viewer_samples s
             WHERE s.channel_id = p_channel AND s.sampled_at >= p_lo - interval '15 minutes'
               AND s.sampled_at < p_hi) x
$$;

-- Recompute the viewer rollups of the given (channel, quarter) buckets and of their parents.
CREATE FUNCTION analytics_refresh_viewer_buckets(p_channels text[], p_quarters timestamptz[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    qc text[]; qb timestamptz[];
    hc text[]; hb timestamptz[];
    dc text[]; db timestamptz[];
BEGIN
    SELECT array_agg(c ORDER BY c, b), array_agg(b ORDER BY c, b) INTO qc, qb
      FROM (SELECT DISTINCT c, date_bin('15 minutes', q, timestamptz 'epoch') AS b
              FROM unnest(p_channels, p_quarters) k(c, q) WHERE q IS NOT NULL) k;
    IF qc IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(c ORDER BY c, b), array_agg(b ORDER BY c, b) INTO hc, hb
      FROM (SELECT DISTINCT c, date_bin('1 hour', q, timestamptz 'epoch') AS b FROM unnest(qc, qb) k(c, q)) k;
    SELECT array_agg(c ORDER BY c, b), array_agg(b ORDER BY c, b) INTO dc, db
      FROM (SELECT DISTINCT c, date_bin('1 day', q, timestamptz 'epoch') AS b FROM unnest(qc, qb) k(c, q)) k;

    DELETE FROM analytics_viewer_rollup r USING unnest(qc, qb) k(c, b)
     WHERE r.channel_id = k.c AND r.res = 900 AND r.bucket = k.b;
    INSERT INTO analytics_viewer_rollup (channel_id, res, bucket, viewer_s, live_s, peak, samples)
    SELECT k.c, 900, k.b, v.viewer_s, v.live_s, v.peak, v.samples
      FROM unnest(qc, qb) k(c, b)
     CROSS JOIN LATERAL analytics_raw_viewers(k.c, k.b, k.b + interval '15 minutes') v
     WHERE v.live_s > 0 OR v.samples > 0;

    DELETE FROM analytics_viewer_rollup r USING unnest(hc, hb) k(c, b)
     WHERE r.channel_id = k.c AND r.res = 3600 AND r.bucket = k.b;
    INSERT INTO analytics_viewer_rollup (channel_id, res, bucket, viewer_s, live_s, peak, samples)
    SELECT k.c, 3600, k.b, sum(r.viewer_s), sum(r.live_s), max(r.peak), sum(r.samples)
      FROM unnest(hc, hb) k(c, b)
      JOIN analytics_viewer_rollup r ON r.channel_id = k.c AND r.res = 900
       AND r.bucket >= k.b AND r.bucket < k.b + interval '1 hour'
     GROUP BY 1, 3;

    DELETE FROM analytics_viewer_rollup r USING unnest(dc, db) k(c, b)
     WHERE r.channel_id = k.c AND r.res = 86400 AND r.bucket = k.b;
    INSERT INTO analytics_viewer_rollup (channel_id, res, bucket, viewer_s, live_s, peak, samples)
    SELECT k.c, 86400, k.b, sum(r.viewer_s), sum(r.live_s), max(r.peak), sum(r.samples)
      FROM unnest(dc, db) k(c, b)
      JOIN analytics_viewer_rollup r ON r.channel_id = k.c AND r.res = 3600
       AND r.bucket >= k.b AND r.bucket < k.b + interval '1 day'
     GROUP BY 1, 3;
END $$;

-- The streams' samples changed, or their sessions' bounds did: recompute each sample's span
-- (until the next sample of the stream, capped at max_span_s and at the stream's end), the
-- viewer rollups they touch, the sessions' viewer figures and the sampling gaps.
-- p_qchannels/p_quarters name extra quarters to refresh (where changed samples used to count).
CREATE FUNCTION analytics_refresh_streams(p_channels text[], p_streams text[],
                                          p_qchannels text[] DEFAULT '{}',
                                          p_quarters timestamptz[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q_channels text[];
    q_quarters timestamptz[];
    was text := coalesce(current_setting('streamerhub.relinking', true), 'off');
BEGIN
    -- Our own span updates must not re-enter the samples trigger. (GUC changes roll back with
    -- a failed (sub)transaction, so an error cannot leave the guard on.)
    PERFORM set_config('streamerhub.relinking', 'on', true);
    -- New spans; remember the quarters the old and new spans touch.
    WITH streams AS (SELECT DISTINCT c, st FROM unnest(p_channels, p_streams) k(c, st)),
    ends AS (
        SELECT s.channel_id, s.stream_id,
               least(s.ended_at, n.started_at) AS end_at       -- least() skips nulls
          FROM streams k
          JOIN stream_sessions s ON s.channel_id = k.c AND s.stream_id = k.st
          LEFT JOIN LATERAL (SELECT min(x.started_at) AS started_at FROM stream_sessions x
                              WHERE x.channel_id = s.channel_id
                                AND (x.started_at, x.stream_id) > (s.started_at, s.stream_id)) n ON true),
    wanted AS (
        SELECT v.channel_id, v.sampled_at, v.span_s AS old_span,
               greatest(0, least(v.max_span_s::numeric, coalesce(floor(extract(epoch FROM
                   least(lead(v.sampled_at) OVER w, e.end_at) - v.sampled_at)), 0)))::integer AS new_span
          FROM streams k
          JOIN viewer_samples v ON v.channel_id = k.c AND v.stream_id = k.st
          LEFT JOIN ends e ON e.channel_id = v.channel_id AND e.stream_id = v.stream_id
        WINDOW w AS (PARTITION BY v.channel_id, v.stream_id ORDER BY v.sampled_at)),
    changed AS (SELECT * FROM wanted WHERE new_span <> old_span),
    touched AS (
        SELECT channel_id, date_bin('15 minutes', sampled_at, timestamptz 'epoch') AS q FROM changed
        UNION
        SELECT channel_id, date_bin('15 minutes', sampled_at + make_interval(secs => greatest(old_span, new_span) - 1),
                                    timestamptz 'epoch') FROM changed WHERE greatest(old_span, new_span) > 0),
    upd AS (   -- a data-modifying CTE always runs to completion
        UPDATE viewer_samples v SET span_s = c.new_span FROM changed c
         WHERE v.channel_id = c.channel_id AND v.sampled_at = c.sampled_at)
    SELECT array_agg(t.channel_id), array_agg(t.q) INTO q_channels, q_quarters FROM touched t;
    PERFORM set_config('streamerhub.relinking', was, true);

    PERFORM analytics_refresh_viewer_buckets(p_qchannels || coalesce(q_channels, '{}'),
                                             p_quarters || coalesce(q_quarters, '{}'));

    UPDATE stream_sessions s SET
           viewer_s = coalesce(a.viewer_s, 0), sampled_s = coalesce(a.sampled_s, 0),
           peak_viewers = coalesce(a.peak, 0), samples = coalesce(a.n, 0),
           last_viewer_count = a.last_count, last_sample_at = a.last_at, updated_at = now()
      FROM (SELECT DISTINCT c, st FROM unnest(p_channels, p_streams) k(c, st)) k
      LEFT JOIN LATERAL (
            SELECT sum(v.viewer_count::bigint * v.span_s) AS viewer_s, sum(v.span_s) AS sampled_s,
                   max(v.viewer_count) AS peak, count(*) AS n, max(v.sampled_at) AS last_at,
                   (array_agg(v.viewer_count ORDER BY v.sampled_at DESC))[1] AS last_count
              FROM viewer_samples v WHERE v.channel_id = k.c AND v.stream_id = k.st) a ON true
     WHERE s.channel_id = k.c AND s.stream_id = k.st
       -- rows whose figures stay as they are are not rewritten
       AND (s.viewer_s, s.sampled_s, s.peak_viewers, s.samples, s.last_viewer_count, s.last_sample_at)
           IS DISTINCT FROM (coalesce(a.viewer_s, 0), coalesce(a.sampled_s, 0), coalesce(a.peak, 0),
                             coalesce(a.n, 0), a.last_count, a.last_at);

    DELETE FROM viewer_sample_gaps g USING unnest(p_channels, p_streams) k(c, st)
     WHERE g.channel_id = k.c AND g.stream_id = k.st;
    INSERT INTO viewer_sample_gaps (channel_id, stream_id, started_at, ended_at, reason)
    SELECT DISTINCT ON (channel_id, stream_id, started_at) channel_id, stream_id, started_at, ended_at, reason
      FROM (
        -- after a sample: nothing until the next one (or the end) beyond max_span_s
        SELECT x.channel_id, x.stream_id, x.sampled_at + make_interval(secs => x.max_span_s) AS started_at,
               x.next_at AS ended_at, 'missed_samples' AS reason
          FROM (SELECT v.channel_id, v.stream_id, v.sampled_at, v.max_span_s,
                       coalesce(lead(v.sampled_at) OVER w,
                                least(s.ended_at, n.started_at)) AS next_at
                  FROM (SELECT DISTINCT c, st FROM unnest(p_channels, p_streams) k(c, st)) k
                  JOIN viewer_samples v ON v.channel_id = k.c AND v.stream_id = k.st
                  LEFT JOIN stream_sessions s ON s.channel_id = v.channel_id AND s.stream_id = v.stream_id
                  LEFT JOIN LATERAL (SELECT min(y.started_at) AS started_at FROM stream_sessions y
                                      WHERE y.channel_id = s.channel_id
                                        AND (y.started_at, y.stream_id) > (s.started_at, s.stream_id)) n ON true
                WINDOW w AS (PARTITION BY v.channel_id, v.stream_id ORDER BY v.sampled_at)) x
         WHERE x.next_at > x.sampled_at + make_interval(secs => x.max_span_s)
        UNION ALL
        -- before the first sample: the stream started more than one span earlier
        SELECT s.channel_id, s.stream_id, s.started_at, f.first_at, 'missed_samples'
          FROM (SELECT DISTINCT c, st FROM unnest(p_channels, p_streams) k(c, st)) k
          JOIN stream_sessions s ON s.channel_id = k.c AND s.stream_id = k.st
          JOIN LATERAL (SELECT v.sampled_at AS first_at, v.max_span_s FROM viewer_samples v
                         WHERE v.channel_id = s.channel_id AND v.stream_id = s.stream_id
                         ORDER BY v.sampled_at LIMIT 1) f ON true
         WHERE f.first_at > s.started_at + make_interval(secs => f.max_span_s)
        UNION ALL
        -- an ended stream without any sample
        SELECT s.channel_id, s.stream_id, s.started_at, s.ended_at, 'no_samples'
          FROM (SELECT DISTINCT c, st FROM unnest(p_channels, p_streams) k(c, st)) k
          JOIN stream_sessions s ON s.channel_id = k.c AND s.stream_id = k.st
         WHERE s.ended_at > s.started_at
           AND NOT EXISTS (SELECT 1 FROM viewer_samples v
                            WHERE v.channel_id = s.channel_id AND v.stream_id = s.stream_id)
      ) g
     ORDER BY channel_id, stream_id, started_at, ended_at DESC;
END $$;

CREATE FUNCTION analytics_samples_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cs text[] := '{}';
    ss text[] := '{}';
    qc text[] := '{}';
    qq timestamptz[] := '{}';
BEGIN
    IF current_setting('streamerhub.relinking', true) = 'on' THEN
        RETURN NULL;                                 -- our own span updates
    END IF;
    IF TG_OP <> 'INSERT' THEN
        SELECT cs || array_agg(o.channel_id), ss || array_agg(o.stream_id),
               qc || array_agg(o.channel_id) || array_agg(o.channel_id),
               qq || array_agg(date_bin('15 minutes', o.sampled_at, timestamptz 'epoch'))
                  || array_agg(date_bin('15 minutes', o.sampled_at + make_interval(secs => greatest(o.span_s - 1, 0)),
                                        timestamptz 'epoch'))
          INTO cs, ss, qc, qq FROM old_rows o;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT cs || array_agg(n.channel_id), ss || array_agg(n.stream_id),
               qc || array_agg(n.channel_id) || array_agg(n.channel_id),
               qq || array_agg(date_bin('15 minutes', n.sampled_at, timestamptz 'epoch'))
                  || array_agg(date_bin('15 minutes', n.sampled_at + make_interval(secs => greatest(n.span_s - 1, 0)),
                                        timestamptz 'epoch'))
          INTO cs, ss, qc, qq FROM new_rows n;
    END IF;
    PERFORM analytics_refresh_streams(cs, ss, qc, qq);
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_samples_ins AFTER INSERT ON viewer_samples
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_samples_changed();
CREATE TRIGGER analytics_samples_upd AFTER UPDATE ON viewer_samples
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_samples_changed();
CREATE TRIGGER analytics_samples_del AFTER DELETE ON viewer_samples
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_samples_changed();

-- ----------------------------------------------------------------------------- sessions

-- The sessions (channel, stream) pairs name, with where each one's window ends for its event
-- counters: its end, else the next session's start.
CREATE FUNCTION analytics_session_windows(p_channels text[], p_streams text[])
RETURNS TABLE (channel_id text, stream_id text, started_at timestamptz, ended_at timestamptz,
               end_source text, next_start timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.channel_id, s.stream_id, s.started_at, s.ended_at, s.end_source, n.next_start
      FROM (SELECT DISTINCT c, st FROM unnest(p_channels, p_streams) k(c, st)) k
     CROSS JOIN LATERAL (SELECT * FROM stream_sessions x      -- by primary key, never a scan
                          WHERE x.channel_id = k.c AND x.stream_id = k.st OFFSET 0) s
      LEFT JOIN LATERAL (SELECT min(x.started_at) AS next_start FROM stream_sessions x
                          WHERE x.channel_id = s.channel_id
                            AND (x.started_at, x.stream_id) > (s.started_at, s.stream_id)) n ON true
$$;

-- Recompute the sessions' event counters from the typed rows in their windows, in one statement.
CREATE FUNCTION analytics_refresh_session_events(p_channels text[], p_streams text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE stream_sessions t SET
           follows = a.follows, subs_new = a.subs_new, subs_resub = a.subs_resub,
           subs_gifted = a.subs_gifted, sub_ends = a.sub_ends, cheers = a.cheers, bits = a.bits,
           raids_in = a.raids_in, raid_viewers_in = a.raid_viewers_in, raids_out = a.raids_out,
           updated_at = now()
      FROM analytics_session_windows(p_channels, p_streams) w
     CROSS JOIN LATERAL (
            SELECT coalesce(sum(f.follows), 0) AS follows, coalesce(sum(f.subs_new), 0) AS subs_new,
                   coalesce(sum(f.subs_resub), 0) AS subs_resub,
                   coalesce(sum(f.subs_gifted), 0) AS subs_gifted,
                   coalesce(sum(f.sub_ends), 0) AS sub_ends, coalesce(sum(f.cheers), 0) AS cheers,
                   coalesce(sum(f.bits), 0) AS bits, coalesce(sum(f.raids_in), 0) AS raids_in,
                   coalesce(sum(f.raid_viewers_in), 0) AS raid_viewers_in,
                   coalesce(sum(f.raids_out), 0) AS raids_out
              FROM analytics_raw_events(w.channel_id, w.started_at,
                                        least(coalesce(w.ended_at, 'infinity'),
                                              coalesce(w.next_start, 'infinity'))) f) a
     WHERE t.channel_id = w.channel_id AND t.stream_id = w.stream_id
       -- rows whose counters stay as they are are not rewritten
       AND (t.follows, t.subs_new, t.subs_resub, t.subs_gifted, t.sub_ends, t.cheers, t.bits,
            t.raids_in, t.raid_viewers_in, t.raids_out)
           IS DISTINCT FROM (a.follows, a.subs_new, a.subs_resub, a.subs_gifted, a.sub_ends,
                             a.cheers, a.bits, a.raids_in, a.raid_viewers_in, a.raids_out);
END $$;

-- Where each session ends: the first stream.offline after its start (and not after the next
-- session's start), else an end found by the Helix poller, else the next session's start.
-- One statement for all of them (a session's end depends on the others' starts, never on
-- their ends). Returns how many changed.
CREATE FUNCTION analytics_settle_sessions(p_channels text[], p_streams text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    changed integer;
BEGIN
    -- Lock in one order: concurrent writers never deadlock.
    PERFORM 1 FROM stream_sessions s
      JOIN (SELECT DISTINCT c, st FROM unnest(p_channels, p_streams) k(c, st)) k
        ON s.channel_id = k.c AND s.stream_id = k.st
     ORDER BY s.channel_id, s.started_at, s.stream_id FOR UPDATE OF s;
    WITH w AS MATERIALIZED (
        SELECT w.*, (SELECT min(o.occurred_at) FROM twitch_streams o
                      WHERE o.channel_id = w.channel_id AND o.kind = 'offline'
                        AND o.occurred_at > w.started_at
                        AND o.occurred_at <= coalesce(w.next_start, 'infinity')) AS offline_at
          FROM analytics_session_windows(p_channels, p_streams) w),
    settled AS (
        SELECT w.channel_id, w.stream_id, w.ended_at, w.end_source,
               CASE WHEN w.offline_at IS NOT NULL THEN w.offline_at
                    WHEN w.end_source = 'helix' THEN least(w.ended_at, w.next_start)
                    -- never saw it end: it was live at its last sample at least, and over by
                    -- the next stream; without samples, until the next stream (greatest()
                    -- skips a NULL: left bare, that case ended the session at its start)
                    WHEN w.next_start IS NOT NULL THEN least(w.next_start, greatest(w.started_at,
                         coalesce((SELECT max(v.sampled_at + make_interval(secs => v.max_span_s))
                                     FROM viewer_samples v
                                    WHERE v.channel_id = w.channel_id AND v.stream_id = w.stream_id),
                                  w.next_start)))
               END AS new_end,
               CASE WHEN w.offline_at IS NOT NULL THEN 'offline'
                    WHEN w.end_source = 'helix' THEN 'helix'
                    WHEN w.next_start IS NOT NULL THEN 'next_stream'
               END AS new_source
          FROM w)
    UPDATE stream_sessions s SET ended_at = x.new_end, end_source = x.new_source, updated_at = now()
      FROM settled x
     WHERE s.channel_id = x.channel_id AND s.stream_id = x.stream_id
       AND (x.new_end IS DISTINCT FROM x.ended_at OR x.new_source IS DISTINCT FROM x.end_source);
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END $$;

-- Sessions around the given instants changed (created, started, ended): settle the latest session
-- started at or before each instant and its neighbours, then recompute what depends on bounds.
CREATE FUNCTION analytics_settle_around(p_channels text[], p_times timestamptz[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cs text[];
    ss text[];
BEGIN
    -- Per channel, every session from the second latest started at or before the earliest
    -- instant to the first started after the latest one: each instant's two latest sessions at
    -- or before it and its first one after are among them, and settling a session that is
    -- already right changes nothing. One index range scan per channel, however many instants a
    -- batch brings (a stream.online or offline each). EXECUTE plans it for this call: a generic
    -- plan cached while stream_sessions was small scans the whole table once it has grown,
    -- until the next ANALYZE.
    EXECUTE $q$
        SELECT array_agg(x.channel_id), array_agg(x.stream_id)
          FROM (SELECT c, min(t) AS lo, max(t) AS hi FROM unnest($1::text[], $2::timestamptz[]) k(c, t)
                 GROUP BY c) k
         CROSS JOIN LATERAL (
               SELECT x.channel_id, x.stream_id FROM stream_sessions x
                WHERE x.channel_id = k.c
                  AND x.started_at >= coalesce((SELECT y.started_at FROM stream_sessions y
                                                 WHERE y.channel_id = k.c AND y.started_at <= k.lo
                                                 ORDER BY y.started_at DESC OFFSET 1 LIMIT 1),
                                               '-infinity')
                  AND x.started_at <= coalesce((SELECT min(y.started_at) FROM stream_sessions y
                                                 WHERE y.channel_id = k.c AND y.started_at > k.hi),
                                               k.hi)
               OFFSET 0) x$q$
       INTO cs, ss USING p_channels, p_times;
    IF cs IS NULL THEN
        RETURN;
    END IF;
    PERFORM analytics_settle_sessions(cs, ss);
    PERFORM analytics_refresh_session_events(cs, ss);
    PERFORM analytics_refresh_streams(cs, ss);
END $$;

-- A stream seen live (stream.online, or Helix GET /streams): create or correct its session.
CREATE FUNCTION analytics_open_session(p_channel text, p_stream text, p_started_at timestamptz,
                                       p_source text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s stream_sessions;
BEGIN
    SELECT * INTO s FROM stream_sessions WHERE channel_id = p_channel AND stream_id = p_stream;
    IF NOT FOUND THEN
        INSERT INTO stream_sessions (channel_id, stream_id, started_at, start_source)
        VALUES (p_channel, p_stream, p_started_at, p_source) ON CONFLICT DO NOTHING;
    ELSIF p_source = 'eventsub' AND (s.start_source <> 'eventsub' OR s.started_at <> p_started_at) THEN
        UPDATE stream_sessions SET started_at = p_started_at, start_source = 'eventsub'
         WHERE channel_id = p_channel AND stream_id = p_stream;
    ELSIF p_source = 'helix' AND s.end_source = 'helix' THEN
        -- Helix dropped it for a while but it is live again: reopen it.
        UPDATE stream_sessions SET ended_at = NULL, end_source = NULL
         WHERE channel_id = p_channel AND stream_id = p_stream;
    ELSE
        RETURN;
    END IF;
    PERFORM analytics_settle_around(ARRAY[p_channel, p_channel],
                                    ARRAY[p_started_at, coalesce(s.started_at, p_started_at)]);
END $$;

-- The Helix poller no longer sees a live stream: end its session unless stream.offline did.
CREATE FUNCTION analytics_close_session(p_channel text, p_stream text, p_ended_at timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE stream_sessions SET ended_at = greatest(started_at, p_ended_at), end_source = 'helix'
     WHERE channel_id = p_channel AND stream_id = p_stream AND ended_at IS NULL;
    IF FOUND THEN
        PERFORM analytics_settle_around(ARRAY[p_channel], ARRAY[p_ended_at]);
    END IF;
END $$;

-- New stream.online/offline rows: open or correct their sessions (as analytics_open_session does
-- for each), then settle everything around the changed instants in ONE pass: a batch with many
-- streams pays the settling (and the viewer refresh) once, not once per stream. When a stream
-- appears twice in a statement, its latest row wins, as it would row by row.
CREATE FUNCTION analytics_streams_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cs text[];
    ts timestamptz[];
BEGIN
    WITH online AS (
        SELECT DISTINCT ON (1, 2) n.channel_id, coalesce(n.stream_id, 'message:' || n.message_id) AS stream_id,
               coalesce(n.started_at, n.occurred_at) AS started_at
          FROM new_rows n WHERE n.kind = 'online'
         ORDER BY 1, 2, n.occurred_at DESC, n.message_id DESC),
    prior AS (   -- the statement's snapshot: sessions as they were before this upsert
        SELECT s.channel_id, s.stream_id, s.started_at FROM online o
          JOIN stream_sessions s ON s.channel_id = o.channel_id AND s.stream_id = o.stream_id),
    opened AS (
        INSERT INTO stream_sessions AS s (channel_id, stream_id, started_at, start_source)
        SELECT o.channel_id, o.stream_id, o.started_at, 'eventsub' FROM online o ORDER BY 1, 2
            ON CONFLICT (channel_id, stream_id) DO UPDATE
           SET started_at = excluded.started_at, start_source = 'eventsub'
         WHERE s.start_source <> 'eventsub' OR s.started_at <> excluded.started_at
        RETURNING s.channel_id, s.stream_id, s.started_at)
    SELECT array_agg(k.c), array_agg(k.t) INTO cs, ts FROM (
        SELECT o.channel_id AS c, o.started_at AS t FROM opened o
        UNION ALL
        SELECT p.channel_id, p.started_at FROM prior p
          JOIN opened o ON o.channel_id = p.channel_id AND o.stream_id = p.stream_id
        UNION ALL
        SELECT n.channel_id, n.occurred_at FROM new_rows n WHERE n.kind = 'offline') k;
    IF cs IS NOT NULL THEN
        PERFORM analytics_settle_around(cs, ts);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_streams_ins AFTER INSERT ON twitch_streams
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION analytics_streams_changed();

-- ----------------------------------------------------------------------------- rebuild

-- Recompute every derived row of one channel (or all) from the raw rows: after a bulk load with
-- triggers off, or to repair. Sessions found by the Helix poller are kept.
CREATE FUNCTION analytics_rebuild(p_channel text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cs text[];
    ss text[];
BEGIN
    DELETE FROM analytics_event_rollup WHERE p_channel IS NULL OR channel_id = p_channel;
    INSERT INTO analytics_event_rollup
           (channel_id, res, bucket, follows, subs_new, subs_resub, subs_gifted, sub_ends, cheers,
            bits, raids_in, raid_viewers_in, raids_out)
    SELECT f.channel_id, 900, date_bin('15 minutes', f.at, timestamptz 'epoch'),
           sum(f.follows), sum(f.subs_new), sum(f.subs_resub), sum(f.subs_gifted), sum(f.sub_ends),
           sum(f.cheers), sum(f.bits), sum(f.raids_in), sum(f.raid_viewers_in), sum(f.raids_out)
      FROM (SELECT (analytics_facts(t, 1)).* FROM twitch_follows t
             WHERE p_channel IS NULL OR t.channel_id = p_channel
            UNION ALL SELECT (analytics_facts(t, 1)).* FROM twitch_subscriptions t
             WHERE p_channel IS NULL OR t.channel_id = p_channel
            UNION ALL SELECT (analytics_facts(t, 1)).* FROM twitch_cheers t
             WHERE p_channel IS NULL OR t.channel_id = p_channel
            UNION ALL SELECT (analytics_facts(t, 1)).* FROM twitch_raids t
             WHERE p_channel IS NULL OR t.channel_id = p_channel) f
     GROUP BY 1, 3;
    INSERT INTO analytics_event_rollup
           (channel_id, res, bucket, follows, subs_new, subs_resub, subs_gifted, sub_ends, cheers,
            bits, raids_in, raid_viewers_in, raids_out)
    SELECT r.channel_id, l.res, date_bin(l.stride, r.bucket, timestamptz 'epoch'),
           sum(r.follows), sum(r.subs_new), sum(r.subs_resub), sum(r.subs_gifted), sum(r.sub_ends),
           sum(r.cheers), sum(r.bits), sum(r.raids_in), sum(r.raid_viewers_in), sum(r.raids_out)
      FROM analytics_event_rollup r
     CROSS JOIN (VALUES (3600, interval '1 hour'), (86400, interval '1 day')) l(res, stride)
     WHERE r.res = 900 AND (p_channel IS NULL OR r.channel_id = p_channel)
     GROUP BY 1, 2, 3;

    -- Sessions: one per stream.online, ends settled from stream.offline.
    INSERT INTO stream_sessions (channel_id, stream_id, started_at, start_source)
    SELECT DISTINCT ON (1, 2) o.channel_id, coalesce(o.stream_id, 'message:' || o.message_id),
           coalesce(o.started_at, o.occurred_at), 'eventsub'
      FROM twitch_streams o
     WHERE o.kind = 'online' AND (p_channel IS NULL OR o.channel_id = p_channel)
     ORDER BY 1, 2, o.occurred_at
    ON CONFLICT (channel_id, stream_id) DO UPDATE SET started_at = excluded.started_at,
           start_source = 'eventsub';
    SELECT array_agg(channel_id), array_agg(stream_id) INTO cs, ss
      FROM stream_sessions WHERE p_channel IS NULL OR channel_id = p_channel;
    PERFORM analytics_settle_sessions(coalesce(cs, '{}'), coalesce(ss, '{}'));
    PERFORM analytics_refresh_session_events(coalesce(cs, '{}'), coalesce(ss, '{}'));

    -- Samples: spans, viewer rollups, session viewer figures, gaps.
    DELETE FROM analytics_viewer_rollup WHERE p_channel IS NULL OR channel_id = p_channel;
    PERFORM set_config('streamerhub.relinking', 'on', true);
    UPDATE viewer_samples SET span_s = -1 WHERE p_channel IS NULL OR channel_id = p_channel;
    PERFORM set_config('streamerhub.relinking', 'off', true);
    SELECT array_agg(channel_id), array_agg(stream_id) INTO cs, ss
      FROM (SELECT DISTINCT channel_id, stream_id FROM viewer_samples
             WHERE p_channel IS NULL OR channel_id = p_channel
            UNION
            SELECT channel_id, stream_id FROM stream_sessions
             WHERE p_channel IS NULL OR channel_id = p_channel) k;
    PERFORM analytics_refresh_streams(coalesce(cs, '{}'), coalesce(ss, '{}'));
END $$;

SELECT analytics_rebuild();
