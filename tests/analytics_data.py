"""Hand-built Twitch history for the analytics tests, and naive answers computed from raw rows.

The naive functions never touch a rollup or an analytics_* SQL function: they are the
definitions the fast paths must equal.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

UTC = timezone.utc
COUNTERS = (
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
_ids = itertools.count(1)

TYPES = {
    "follow": ("channel.follow", "2"),
    "sub": ("channel.subscribe", "1"),
    "resub": ("channel.subscription.message", "1"),
    "gift": ("channel.subscription.gift", "1"),
    "end": ("channel.subscription.end", "1"),
    "cheer": ("channel.cheer", "1"),
    "raid_in": ("channel.raid", "1"),
    "raid_out": ("channel.raid", "1"),
    "online": ("stream.online", "1"),
    "offline": ("stream.offline", "1"),
    "update": ("channel.update", "2"),
}


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def add_event(
    conn: Any,
    kind: str,
    channel: str,
    at: datetime,
    *,
    message_id: str | None = None,
    user: str = "viewer",
    bits: int = 100,
    total: int = 5,
    viewers: int = 42,
    is_gift: bool = False,
    stream_id: str | None = None,
    title: str = "Just chatting",
    category: str = "Just Chatting",
) -> str:
    """Store one notification as the store does: raw row + typed row (ON CONFLICT DO NOTHING)."""
    mid = message_id or f"m{next(_ids)}"
    sub_type, version = TYPES[kind]
    user_fields = {"user_id": f"id-{user}", "user_login": user, "user_name": user.title()}
    event: dict[str, Any] = {"broadcaster_user_id": channel, **user_fields}
    if kind == "cheer":
        event["bits"] = bits
    if kind in ("sub", "gift", "resub", "end"):
        event["tier"] = "1000"
    if kind == "gift":
        event["total"] = total
    if kind.startswith("raid"):
        other = (
            {"from": f"id-{user}", "to": channel}
            if kind == "raid_in"
            else {"from": channel, "to": f"id-{user}"}
        )
        event = {
            "from_broadcaster_user_id": other["from"],
            "from_broadcaster_user_login": user,
            "from_broadcaster_user_name": user,
            "to_broadcaster_user_id": other["to"],
            "viewers": viewers,
        }
    inserted = await conn.fetchval(
        """INSERT INTO twitch_events (message_id, subscription_type, subscription_version, channel_id,
                                      occurred_at, payload)
           VALUES ($1, $2, $3, $4, $5, $6::text::jsonb) ON CONFLICT DO NOTHING RETURNING message_id""",
        mid,
        sub_type,
        version,
        channel,
        at,
        json.dumps({"event": event}),
    )
    if inserted is None:
        return mid  # a duplicate delivery: nothing typed
    await _typed(
        conn,
        kind,
        mid,
        channel,
        at,
        user,
        bits,
        total,
        viewers,
        is_gift,
        stream_id,
        title,
        category,
    )
    return mid


async def _typed(
    conn: Any,
    kind: str,
    mid: str,
    channel: str,
    at: datetime,
    user: str,
    bits: int,
    total: int,
    viewers: int,
    is_gift: bool,
    stream_id: str | None,
    title: str,
    category: str,
) -> None:
    if kind == "follow":
        await conn.execute(
            "INSERT INTO twitch_follows VALUES ($1, $2, $3, $4, $4, $5)",
            mid,
            channel,
            f"id-{user}",
            user,
            at,
        )
    elif kind in ("sub", "resub", "gift", "end"):
        await conn.execute(
            """INSERT INTO twitch_subscriptions (message_id, channel_id, kind, user_id, tier, is_gift,
                                                 gift_total, occurred_at)
               VALUES ($1, $2, $3, $4, '1000', $5, $6, $7)""",
            mid,
            channel,
            kind,
            f"id-{user}",
            is_gift,
            total if kind == "gift" else None,
            at,
        )
    elif kind == "cheer":
        await conn.execute(
            "INSERT INTO twitch_cheers (message_id, channel_id, bits, occurred_at) "
            "VALUES ($1, $2, $3, $4)",
            mid,
            channel,
            bits,
            at,
        )
    elif kind.startswith("raid"):
        src, dst = (f"id-{user}", channel) if kind == "raid_in" else (channel, f"id-{user}")
        await conn.execute(
            "INSERT INTO twitch_raids VALUES ($1, $2, $3, $4, $4, $5, 'x', 'x', $6, $7)",
            mid,
            channel,
            src,
            user,
            dst,
            viewers,
            at,
        )
    elif kind in ("online", "offline"):
        await conn.execute(
            "INSERT INTO twitch_streams (message_id, channel_id, kind, stream_id, started_at, occurred_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            mid,
            channel,
            kind,
            stream_id if kind == "online" else None,
            at if kind == "online" else None,
            at,
        )
    elif kind == "update":
        await conn.execute(
            "INSERT INTO twitch_channel_updates (message_id, channel_id, title, category_name, occurred_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            mid,
            channel,
            title,
            category,
            at,
        )


async def add_samples(
    conn: Any,
    channel: str,
    stream_id: str,
    start: datetime,
    counts: list[int | None],
    every_s: int = 60,
    max_span_s: int = 90,
) -> None:
    """One sample every `every_s` from `start`; None leaves a sample out (a missed poll)."""
    rows = [
        (channel, stream_id, start + timedelta(seconds=i * every_s), n, max_span_s)
        for i, n in enumerate(counts)
        if n is not None
    ]
    await conn.execute(
        "INSERT INTO viewer_samples (channel_id, stream_id, sampled_at, viewer_count, max_span_s) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int[], $5::int[])",
        *map(list, zip(*rows)),
    )


# ----------------------------------------------------------------------------- naive answers

NAIVE_BUCKETS = """
SELECT channel_id, date_bin($1 * interval '1 second', at, timestamptz 'epoch') AS bucket,
       sum(follows) AS follows, sum(subs_new) AS subs_new, sum(subs_resub) AS subs_resub,
       sum(subs_gifted) AS subs_gifted, sum(sub_ends) AS sub_ends, sum(cheers) AS cheers,
       sum(bits) AS bits, sum(raids_in) AS raids_in, sum(raid_viewers_in) AS raid_viewers_in,
       sum(raids_out) AS raids_out
  FROM (SELECT channel_id, followed_at AS at, 1 AS follows, 0 AS subs_new, 0 AS subs_resub,
               0 AS subs_gifted, 0 AS sub_ends, 0 AS cheers, 0 AS bits, 0 AS raids_in,
               0 AS raid_viewers_in, 0 AS raids_out FROM twitch_follows
        UNION ALL
        SELECT channel_id, occurred_at, 0, (kind = 'sub' AND NOT is_gift)::int, (kind = 'resub')::int,
               CASE WHEN kind = 'gift' THEN coalesce(gift_total, 1) ELSE 0 END, (kind = 'end')::int,
               0, 0, 0, 0, 0 FROM twitch_subscriptions
        UNION ALL
        SELECT channel_id, occurred_at, 0, 0, 0, 0, 0, 1, bits, 0, 0, 0 FROM twitch_cheers
        UNION ALL
        SELECT channel_id, occurred_at, 0, 0, 0, 0, 0, 0, 0, (to_user_id = channel_id)::int,
               CASE WHEN to_user_id = channel_id THEN viewers ELSE 0 END,
               (from_user_id = channel_id)::int FROM twitch_raids) f
 GROUP BY 1, 2"""


async def naive_event_buckets(conn: Any, res: int) -> dict[tuple[str, datetime], tuple[int, ...]]:
    rows = await conn.fetch(NAIVE_BUCKETS, res)
    return {
        (r["channel_id"], r["bucket"]): tuple(int(r[c]) for c in COUNTERS)
        for r in rows
        if any(r[c] for c in COUNTERS)
    }


async def rollup_event_buckets(conn: Any, res: int) -> dict[tuple[str, datetime], tuple[int, ...]]:
    rows = await conn.fetch("SELECT * FROM analytics_event_rollup WHERE res = $1", res)
    return {
        (r["channel_id"], r["bucket"]): tuple(int(r[c]) for c in COUNTERS)
        for r in rows
        if any(r[c] for c in COUNTERS)
    }


async def naive_event_totals(conn: Any, channel: str, lo: datetime, hi: datetime) -> dict[str, int]:
    query = NAIVE_BUCKETS.replace(
        "date_bin($1 * interval '1 second', at, timestamptz 'epoch')", "$1::int"
    )
    query = query.replace(
        "GROUP BY 1, 2", "WHERE channel_id = $2 AND at >= $3 AND at < $4 GROUP BY 1, 2"
    )
    row = await conn.fetchrow(query, 0, channel, lo, hi)
    return {c: int(row[c]) if row else 0 for c in COUNTERS}


async def naive_sessions(conn: Any, channel: str) -> list[dict[str, Any]]:
    """Sessions by definition: one per stream.online; ends at the first offline after the start
    (not after the next start), else at the next start capped by the last sample + its span."""
    onlines = await conn.fetch(
        "SELECT DISTINCT ON (stream_id) stream_id, started_at FROM twitch_streams "
        "WHERE channel_id = $1 AND kind = 'online' ORDER BY stream_id, occurred_at",
        channel,
    )
    offlines = sorted(
        r["occurred_at"]
        for r in await conn.fetch(
            "SELECT occurred_at FROM twitch_streams WHERE channel_id = $1 AND kind = 'offline'",
            channel,
        )
    )
    samples = await raw_samples(conn, channel)
    starts = sorted((r["started_at"], r["stream_id"]) for r in onlines)
    out = []
    for i, (start, stream) in enumerate(starts):
        nxt = starts[i + 1][0] if i + 1 < len(starts) else None
        end = next((o for o in offlines if o > start and (nxt is None or o <= nxt)), None)
        if end is None and nxt is not None:
            mine = [s for s in samples if s["stream_id"] == stream]
            last = max(
                (s["sampled_at"] + timedelta(seconds=s["max_span_s"]) for s in mine), default=nxt
            )
            end = min(nxt, max(start, last))
        out.append({"stream_id": stream, "started_at": start, "ended_at": end, "next": nxt})
    return out


async def raw_samples(conn: Any, channel: str) -> list[Any]:
    return await conn.fetch(
        "SELECT * FROM viewer_samples WHERE channel_id = $1 ORDER BY sampled_at", channel
    )


def naive_spans(samples: list[Any], sessions: list[dict[str, Any]]) -> dict[datetime, int]:
    """Each sample counts until the next one of its stream, capped at max_span_s and at the
    stream's end (the earlier of its end and the next stream's start)."""
    ends = {
        s["stream_id"]: min([t for t in (s["ended_at"], s["next"]) if t is not None], default=None)
        for s in sessions
    }
    by_stream: dict[str, list[Any]] = defaultdict(list)
    for s in samples:
        by_stream[s["stream_id"]].append(s)
    spans = {}
    for stream, rows in by_stream.items():
        rows.sort(key=lambda r: r["sampled_at"])
        for i, r in enumerate(rows):
            limits = [
                t
                for t in (
                    (rows[i + 1]["sampled_at"] if i + 1 < len(rows) else None),
                    ends.get(stream),
                )
                if t is not None
            ]
            until = min(limits) if limits else r["sampled_at"]
            seconds = math.floor((until - r["sampled_at"]).total_seconds())
            spans[r["sampled_at"]] = max(0, min(r["max_span_s"], seconds))
    return spans


def naive_viewers(
    samples: list[Any], spans: dict[datetime, int], lo: datetime, hi: datetime
) -> dict[str, int]:
    """viewer_s, live_s, peak and samples of [lo, hi) from the raw samples and their spans."""
    out = {"viewer_s": 0, "live_s": 0, "peak": 0, "samples": 0}
    for s in samples:
        t, span = s["sampled_at"], spans[s["sampled_at"]]
        overlap = (min(t + timedelta(seconds=span), hi) - max(t, lo)).total_seconds()
        overlap = max(0, int(overlap))
        out["viewer_s"] += s["viewer_count"] * overlap
        out["live_s"] += overlap
        if lo <= t < hi:
            out["samples"] += 1
        if (lo <= t < hi) or overlap > 0:
            out["peak"] = max(out["peak"], s["viewer_count"])
    return out
