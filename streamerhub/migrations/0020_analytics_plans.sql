-- 0020: the dashboard's totals are planned in a tenth of a millisecond, not milliseconds, and
-- its unique chatters read each stored bitmap once.
--
-- The raw-row readers used at a range's unaligned edges (analytics_raw_events,
-- analytics_raw_activity) were SQL functions, which PostgreSQL inlines into the statement that
-- calls them: every totals statement then carried the whole fact expression of each type (the
-- activity one three times over, once per column it reads) and took 1 to 4.5 ms to plan for a
-- run of under 1 ms. A prepared statement is re-planned for its first five runs, and after that
-- only when PostgreSQL guesses that a generic plan costs more, a guess that flips with the
-- table sizes: the same card cost 0.6 ms on one history and 4 ms on a larger one.
--
-- As PL/pgSQL functions they are opaque to the caller, and their own statement is planned once
-- per connection (a generic plan, forced: one index range scan whatever the bounds; left to
-- itself PostgreSQL re-planned it at every call, 0.9 ms each, because a generic estimate of a
-- range over a big table always looks dearer than the few edge seconds they are given). Never
-- in parallel: that generic estimate (28,000 rows on a 30M-event history, for 300) made
-- PostgreSQL start two workers, 4 ms, to read 220 buffers.

CREATE OR REPLACE FUNCTION analytics_raw_events(p_channel text, p_lo timestamptz, p_hi timestamptz)
RETURNS SETOF analytics_event_fact LANGUAGE plpgsql STABLE ROWS 20
SET plan_cache_mode = force_generic_plan SET max_parallel_workers_per_gather = 0 AS $$
BEGIN
    RETURN QUERY
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
     WHERE t.channel_id = p_channel AND t.occurred_at >= p_lo AND t.occurred_at < p_hi;
END
$$;

CREATE OR REPLACE FUNCTION analytics_raw_activity(p_channel text, p_lo timestamptz, p_hi timestamptz)
RETURNS SETOF analytics_activity_fact LANGUAGE plpgsql STABLE ROWS 100
SET plan_cache_mode = force_generic_plan SET max_parallel_workers_per_gather = 0 AS $$
BEGIN
    RETURN QUERY
    SELECT (f).* FROM (
        SELECT analytics_activity_facts(e.subscription_type, e.channel_id, e.occurred_at,
                                        e.payload -> 'event') f
          FROM twitch_events e
         WHERE e.subscription_type IN ('channel.chat.message', 'channel.bits.use',
                                       'channel.ad_break.begin', 'channel.shoutout.receive',
                                       'channel.charity_campaign.donate')
           AND e.channel_id = p_channel AND e.occurred_at >= p_lo AND e.occurred_at < p_hi
        OFFSET 0) x  -- each row's facts once, not once per column read below
     WHERE (f).channel_id IS NOT NULL;
END
$$;

-- a | b (0019), each argument decompressed once. A stored bitmap arrives compressed, and each
-- of the SQL version's reads of it (its length twice, then the OR) decompressed it again: three
-- times per bitmap in a union, a cost that grows with how full the bitmaps are (the union of a
-- month's hour bitmaps took 17.9 ms on a 30M-event history and 5.9 ms on a 3M one; now 6.8 and
-- 4.1 ms).
CREATE OR REPLACE FUNCTION analytics_or(a varbit, b varbit) RETURNS varbit
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    la integer;
    lb integer;
BEGIN
    a := a || B'';  -- a plain copy: what is read below is read once
    b := b || B'';
    la := length(a);
    lb := length(b);
    IF la = lb THEN
        RETURN a | b;
    ELSIF la < lb THEN
        RETURN (a || substring(b FROM la + 1)) | b;  -- the padding OR'ed with b's tail is that tail
    END IF;
    RETURN (b || substring(a FROM lb + 1)) | a;
END
$$;
