"""Totals of any time ranges, read from the rollups PostgreSQL keeps (migrations 0003, 0008, 0019).

Each range is cut by `periods.split_aligned` into runs of whole days, hours and quarters (and,
for chat, minutes: one index range scan each) plus, at unaligned edges, raw fragments read from
the typed rows, so the answer is exact for any instants. `conn` is an asyncpg connection or pool.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from streamerhub.analytics.periods import ACTIVITY_LEVELS, ROLLUP_LEVELS, split_aligned

EVENT_FIELDS = (
    "follows",
    "subs_new",
    "subs_resub",
    "subs_gifted",
    "sub_ends",
    "cheers",
    "bits",
    "raids_in",
    "raid_viewers_in",
    "raids_out",
)
VIEWER_FIELDS = ("viewer_s", "live_s", "peak", "samples")
Range = tuple[datetime, datetime]

_PIECES = (
    "unnest($2::int[], $3::int[], $4::timestamptz[], $5::timestamptz[]) AS p(idx, res, lo, hi)"
)


def _piece_totals(rollup: str, raw: str, fields: tuple[str, ...], cast: str = "") -> str:
    """Sums of `fields` over each piece: its rollup rows (res > 0) or, for the raw seconds at
    its edges (res = 0), the raw-rows function. The aggregate inside LATERAL keeps each piece an
    index range scan of its own (a plain join would be flattened into a hash join over the whole
    rollup table)."""
    sums = ", ".join(f"coalesce(sum(r.{f}), 0){cast} AS {f}" for f in fields)
    raw_sums = ", ".join(f"coalesce(sum(f.{f}), 0){cast}" for f in fields)
    return f"""
SELECT p.idx, r.*
  FROM {_PIECES}
 CROSS JOIN LATERAL (SELECT {sums}
                       FROM {rollup} r
                      WHERE r.channel_id = $1 AND r.res = p.res
                        AND r.bucket >= p.lo AND r.bucket < p.hi) r
 WHERE p.res > 0
UNION ALL
SELECT p.idx, {raw_sums}
  FROM {_PIECES}
 CROSS JOIN LATERAL {raw}($1, p.lo, p.hi) f
 WHERE p.res = 0
 GROUP BY p.idx"""


EVENT_TOTALS = _piece_totals(
    "analytics_event_rollup", "analytics_raw_events", EVENT_FIELDS, "::bigint"
)

VIEWER_TOTALS = f"""
SELECT p.idx, r.*
  FROM {_PIECES}
 CROSS JOIN LATERAL (SELECT coalesce(sum(r.viewer_s), 0)::bigint AS viewer_s,
                            coalesce(sum(r.live_s), 0)::bigint AS live_s,
                            coalesce(max(r.peak), 0) AS peak,
                            coalesce(sum(r.samples), 0)::bigint AS samples
                       FROM analytics_viewer_rollup r
                      WHERE r.channel_id = $1 AND r.res = p.res
                        AND r.bucket >= p.lo AND r.bucket < p.hi) r
 WHERE p.res > 0
UNION ALL
SELECT p.idx, v.viewer_s, v.live_s, v.peak, v.samples
  FROM {_PIECES}
 CROSS JOIN LATERAL analytics_raw_viewers($1, p.lo, p.hi) v
 WHERE p.res = 0"""

# Live seconds inside each range: sessions clipped to it (a live one runs until $4). Only
# sessions started less than the longest session before the range can reach into it.
STREAMED = """
WITH longest AS (
    SELECT coalesce(max(coalesce(ended_at, $4) - started_at), interval '0') AS d
      FROM stream_sessions WHERE channel_id = $1)
SELECT k.i, s.seconds
  FROM unnest($2::timestamptz[], $3::timestamptz[]) WITH ORDINALITY AS k(lo, hi, i)
 CROSS JOIN longest
 CROSS JOIN LATERAL (
       SELECT coalesce(sum(greatest(0, extract(epoch FROM
                  least(coalesce(x.ended_at, greatest($4, x.started_at)), k.hi)
                  - greatest(x.started_at, k.lo)))), 0)::float8 AS seconds
         FROM stream_sessions x
        WHERE x.channel_id = $1 AND x.started_at < k.hi
          AND x.started_at >= k.lo - longest.d) s
 ORDER BY k.i"""

# Seconds of capture missing inside each range (EventSub outages + sampling holes, overlaps
# clipped to it), one index range each: holes start at most `longest` before the range.
GAP_SECONDS = """
WITH longest AS (
    SELECT coalesce(max(ended_at - started_at), interval '0') AS d
      FROM viewer_sample_gaps WHERE channel_id = $1)
SELECT k.i,
       coalesce((SELECT sum(greatest(0, extract(epoch FROM least(coalesce(g.ended_at, $4), k.hi)
                                                  - greatest(g.started_at, k.lo))))
                   FROM eventsub_gaps g
                  WHERE g.channel_id = $1 AND g.started_at < k.hi
                    AND coalesce(g.ended_at, $4) > k.lo), 0)
     + coalesce((SELECT sum(greatest(0, extract(epoch FROM least(g.ended_at, k.hi)
                                                  - greatest(g.started_at, k.lo))))
                   FROM viewer_sample_gaps g
                  WHERE g.channel_id = $1 AND g.started_at < k.hi
                    AND g.started_at >= k.lo - longest.d AND g.ended_at > k.lo), 0) AS seconds
  FROM unnest($2::timestamptz[], $3::timestamptz[]) WITH ORDINALITY AS k(lo, hi, i)
 CROSS JOIN longest
 ORDER BY k.i"""


# Seconds of viewer sampling holes inside each range (connected mid-stream, missed polls).
SAMPLING_GAP_SECONDS = """
WITH longest AS (
    SELECT coalesce(max(ended_at - started_at), interval '0') AS d
      FROM viewer_sample_gaps WHERE channel_id = $1)
SELECT k.i,
       coalesce((SELECT sum(greatest(0, extract(epoch FROM least(g.ended_at, k.hi)
                                                  - greatest(g.started_at, k.lo))))
                   FROM viewer_sample_gaps g
                  WHERE g.channel_id = $1 AND g.started_at < k.hi
                    AND g.started_at >= k.lo - longest.d AND g.ended_at > k.lo), 0) AS seconds
  FROM unnest($2::timestamptz[], $3::timestamptz[]) WITH ORDINALITY AS k(lo, hi, i)
 CROSS JOIN longest
 ORDER BY k.i"""


# ----------------------------------------------------------------------------- readers


def _pieces(
    ranges: Sequence[Range], levels: tuple[int, ...] = ROLLUP_LEVELS
) -> tuple[list[int], list[int], list[datetime], list[datetime]]:
    idx, res, lo, hi = [], [], [], []
    for i, (start, end) in enumerate(ranges):
        for r, a, b in split_aligned(start, end, levels):
            idx.append(i)
            res.append(r)
            lo.append(a)
            hi.append(b)
    return idx, res, lo, hi


async def event_totals(conn: Any, channel_id: str, ranges: Sequence[Range]) -> list[dict[str, int]]:
    """Event counters (EVENT_FIELDS) of each [start, end) range."""
    out = [dict.fromkeys(EVENT_FIELDS, 0) for _ in ranges]
    for row in await conn.fetch(EVENT_TOTALS, channel_id, *_pieces(ranges)):
        for name in EVENT_FIELDS:
            out[row["idx"]][name] += row[name]
    return out


async def viewer_totals(
    conn: Any, channel_id: str, ranges: Sequence[Range]
) -> list[dict[str, int]]:
    """viewer_s (watch time), live_s (sampled time), peak and samples of each range."""
    out = [dict.fromkeys(VIEWER_FIELDS, 0) for _ in ranges]
    for row in await conn.fetch(VIEWER_TOTALS, channel_id, *_pieces(ranges)):
        total = out[row["idx"]]
        total["viewer_s"] += row["viewer_s"]
        total["live_s"] += row["live_s"]
        total["samples"] += row["samples"]
        total["peak"] = max(total["peak"], row["peak"])
    return out


async def streamed_seconds(
    conn: Any, channel_id: str, ranges: Sequence[Range], now: datetime
) -> list[float]:
    """Seconds live inside each range: sessions clipped to it (a live one runs until `now`)."""
    if not ranges:
        return []
    rows = await conn.fetch(
        STREAMED, channel_id, [r[0] for r in ranges], [r[1] for r in ranges], now
    )
    return [row["seconds"] for row in rows]


async def sampling_gap_seconds(conn: Any, channel_id: str, ranges: Sequence[Range]) -> list[float]:
    """Seconds of each range that were live but not covered by viewer samples."""
    rows = await conn.fetch(
        SAMPLING_GAP_SECONDS, channel_id, [r[0] for r in ranges], [r[1] for r in ranges]
    )
    return [float(row["seconds"]) for row in rows]


async def gap_seconds(
    conn: Any, channel_id: str, ranges: Sequence[Range], now: datetime
) -> list[float]:
    """Seconds of missing capture inside each range (an outage still going runs until `now`)."""
    rows = await conn.fetch(
        GAP_SECONDS, channel_id, [r[0] for r in ranges], [r[1] for r in ranges], now
    )
    return [float(row["seconds"]) for row in rows]


# ----------------------------------------------------------------------------- raw-log activity

# Counters of migration 0008, read from the raw event log by subscription type.
ACTIVITY_FIELDS = (
    "chat_messages",
    "bits_power_up",
    "bits_combo",
    "bits_use_cheer",
    "ad_breaks",
    "ad_seconds",
    "shoutouts_in",
    "shoutout_viewers",
    "charity_donations",
    "charity_amount",
)
ACTIVITY_TOTALS = _piece_totals(
    "analytics_activity_rollup", "analytics_raw_activity", ACTIVITY_FIELDS
)

# Unique chatters of each range: the OR of the chatter bitmaps of its whole UTC days, hours,
# quarters and minutes (analytics_chatter_days, analytics_chatter_sets) and of the chatters of its
# raw seconds at unaligned edges (under a minute each): a bounded number of rows whose size is
# the channel's number of chatters, not its messages. A range that starts before the first
# chatter is everyone who first wrote before its end (all time: two index probes).
UNIQUE_CHATTERS = f"""
WITH p AS (SELECT * FROM {_PIECES}),
first AS (SELECT min(first_at) AS at FROM analytics_chatter_ids WHERE channel_id = $1),
ranges AS (SELECT idx, min(lo) AS lo, max(hi) AS hi FROM p GROUP BY idx),
whole AS (SELECT r.idx, r.hi FROM ranges r, first WHERE first.at IS NULL OR r.lo <= first.at),
parts AS (SELECT * FROM p WHERE p.idx NOT IN (SELECT idx FROM whole)),
sets AS (
    SELECT p.idx, s.seen FROM parts p CROSS JOIN LATERAL (
           SELECT d.seen FROM analytics_chatter_days d
            WHERE p.res = 86400 AND d.channel_id = $1 AND d.day >= p.lo AND d.day < p.hi
           UNION ALL
           SELECT c.seen FROM analytics_chatter_sets c
            WHERE p.res IN (60, 900, 3600) AND c.channel_id = $1 AND c.res = p.res
              AND c.bucket >= p.lo AND c.bucket < p.hi
           UNION ALL
           -- a lookup per chatter (a join would hash every chatter id ever)
           SELECT analytics_bits_of(ARRAY(
                  SELECT (SELECT k.id FROM analytics_chatter_ids k
                           WHERE k.channel_id = $1 AND k.user_id = f.chatter_id)
                    FROM (SELECT DISTINCT f.chatter_id
                            FROM analytics_raw_activity($1, p.lo, p.hi) f
                           WHERE f.chatter_id IS NOT NULL) f))
            WHERE p.res = 0) s)
SELECT w.idx,
       -- ids are dense from 0: those first seen before hi are all but those seen from hi on
       (SELECT coalesce(max(k.id) + 1, 0) FROM analytics_chatter_ids k WHERE k.channel_id = $1)
       - (SELECT count(*) FROM analytics_chatter_ids k
           WHERE k.channel_id = $1 AND k.first_at >= w.hi) AS chatters
  FROM whole w
UNION ALL
SELECT r.idx,
       coalesce((SELECT bit_count(analytics_union(s.seen)) FROM sets s WHERE s.idx = r.idx), 0)
  FROM ranges r
 WHERE r.idx NOT IN (SELECT idx FROM whole)"""
# An ended stream's top chatters: the first rows of its chatters (analytics_session_chatters,
# 0019; ORDER BY the column itself, not the bigint output: the index gives the rows in order).
SESSION_TOP_CHATTERS = """
SELECT c.user_id, c.user_login, c.messages::bigint AS messages FROM analytics_session_chatters c
 WHERE c.channel_id = $1 AND c.stream_id = $2
 ORDER BY c.messages DESC, c.user_id LIMIT $3"""


async def activity_totals(
    conn: Any, channel_id: str, ranges: Sequence[Range]
) -> list[dict[str, Any]]:
    """Raw-log counters (ACTIVITY_FIELDS) of each [start, end) range; charity as a Decimal."""
    out: list[dict[str, Any]] = [dict.fromkeys(ACTIVITY_FIELDS, 0) for _ in ranges]
    for row in await conn.fetch(ACTIVITY_TOTALS, channel_id, *_pieces(ranges, ACTIVITY_LEVELS)):
        for name in ACTIVITY_FIELDS:
            out[row["idx"]][name] += row[name]
    for totals in out:
        for name in ACTIVITY_FIELDS:
            if name != "charity_amount":
                totals[name] = int(totals[name])
    return out


async def unique_chatters(conn: Any, channel_id: str, ranges: Sequence[Range]) -> list[int]:
    """How many different people wrote in the channel's own chat in each range."""
    out = [0] * len(ranges)
    if ranges:
        pieces = _pieces(ranges, ACTIVITY_LEVELS)
        for row in await conn.fetch(UNIQUE_CHATTERS, channel_id, *pieces):
            out[row["idx"]] = row["chatters"]
    return out


# A live stream's so far (kept per stream once it ends): its whole hours from
# analytics_chatters, its edges from the raw log.
LIVE_TOP_CHATTERS = """
SELECT user_id, user_login, messages FROM analytics_session_chatter_counts($1, $2, $3)
 ORDER BY messages DESC, user_id LIMIT $4"""


async def session_top_chatters(
    conn: Any, channel_id: str, stream_id: str, live: Range | None = None, limit: int = 5
) -> list[dict[str, Any]]:
    """The people who wrote most during a stream: user_id, user_login, messages. An ended
    stream's are kept; a live one's (`live`: its start and now) are counted from the chat."""
    if live is not None:
        rows = await conn.fetch(LIVE_TOP_CHATTERS, channel_id, *live, limit)
    else:
        rows = await conn.fetch(SESSION_TOP_CHATTERS, channel_id, stream_id, limit)
    return [dict(r) for r in rows]
