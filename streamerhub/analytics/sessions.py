"""Stream sessions: one row per Twitch stream, from stream.online/offline reconciled with Helix.

The rows live in `stream_sessions` and are kept by PostgreSQL (migration 0003): a
stream.online opens one, stream.offline ends it, every follow/sub/cheer/raid inside it and every
viewer sample of the stream updates its figures. The Helix poller adds what EventSub missed
(`open_from_helix`, `close_from_helix`). This module reads them for the dashboard and exports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from streamerhub.analytics.periods import UTC
from streamerhub.analytics.rollups import activity_totals, session_top_chatters, unique_chatters

SESSION_COLUMNS = """
s.channel_id, s.stream_id, s.started_at, s.ended_at, s.start_source, s.end_source, s.follows,
s.subs_new, s.subs_resub, s.subs_gifted, s.cheers, s.bits, s.raids_in, s.raid_viewers_in,
s.viewer_s, s.sampled_s, s.peak_viewers, s.samples,
coalesce(u.title, f.title) AS title, coalesce(u.category_name, f.category_name) AS category,
(SELECT count(*) FROM viewer_sample_gaps g
  WHERE g.channel_id = s.channel_id AND g.stream_id = s.stream_id) AS gaps"""

# Title and category at the start: the last channel.update at or before it, else what Helix
# reported with the first sample.
SESSION_JOINS = """
LEFT JOIN LATERAL (SELECT c.title, c.category_name FROM twitch_channel_updates c
                    WHERE c.channel_id = s.channel_id AND c.occurred_at <= s.started_at
                    ORDER BY c.occurred_at DESC LIMIT 1) u ON true
LEFT JOIN LATERAL (SELECT v.title, v.category_name FROM viewer_samples v
                    WHERE v.channel_id = s.channel_id AND v.stream_id = s.stream_id
                    ORDER BY v.sampled_at LIMIT 1) f ON true"""

LIST_SESSIONS = f"""
SELECT {SESSION_COLUMNS}
  FROM stream_sessions s {SESSION_JOINS}
 WHERE s.channel_id = $1 AND s.started_at < $3 AND coalesce(s.ended_at, 'infinity') > $2
   AND ($4::timestamptz IS NULL OR s.started_at < $4)
 ORDER BY s.started_at DESC
 LIMIT $5"""

ONE_SESSION = f"""
SELECT {SESSION_COLUMNS}
  FROM stream_sessions s {SESSION_JOINS}
 WHERE s.channel_id = $1 AND s.stream_id = $2"""

CHANGES = """
SELECT occurred_at, title, category_name FROM twitch_channel_updates
 WHERE channel_id = $1 AND occurred_at > $2 AND occurred_at < $3
 ORDER BY occurred_at"""

SAMPLES = """
SELECT sampled_at, viewer_count, span_s FROM viewer_samples
 WHERE channel_id = $1 AND stream_id = $2 ORDER BY sampled_at"""

SESSION_GAPS = """
SELECT started_at, ended_at, reason FROM viewer_sample_gaps
 WHERE channel_id = $1 AND stream_id = $2 ORDER BY started_at"""

# Who gave most during a stream, kept per ended stream by PostgreSQL (migration 0019): a sub
# (new, resub or gifted, Tier 1) weighs 500 Bits, about what either costs a viewer; Bits are
# cheers plus Power-ups and combos. Anonymous gifts and cheers have no one to name: left out.
TOP_SUPPORTERS = """
SELECT user_id, user_login, subs, gifted, bits FROM analytics_session_supporters
 WHERE channel_id = $1 AND stream_id = $2 AND events > 0
 ORDER BY score DESC, user_id
 LIMIT $3"""
# A live stream's so far, by the same rules, from its rows (kept once it ends).
LIVE_TOP_SUPPORTERS = """
SELECT user_id, max(user_login) AS user_login, sum(subs)::bigint AS subs,
       sum(gifted)::bigint AS gifted, sum(bits)::bigint AS bits
  FROM analytics_raw_supporters($1, $2, $3)
 GROUP BY 1
 ORDER BY 500 * (sum(subs) + sum(gifted)) + sum(bits) DESC, 1
 LIMIT $4"""

AD_BREAKS = """
SELECT occurred_at, payload #>> '{event,duration_seconds}' AS duration_s FROM twitch_events
 WHERE subscription_type = 'channel.ad_break.begin' AND channel_id = $1
   AND occurred_at >= $2 AND occurred_at < $3
 ORDER BY occurred_at"""

OPEN_SESSION = "SELECT analytics_open_session($1, $2, $3, 'helix')"
CLOSE_SESSION = "SELECT analytics_close_session($1, $2, $3)"
OPEN_SESSIONS = """
SELECT channel_id, stream_id, started_at, last_sample_at FROM stream_sessions
 WHERE ended_at IS NULL ORDER BY channel_id"""


@dataclass(frozen=True)
class SessionSummary:
    """One Twitch stream: when, what, and what happened during it."""

    channel_id: str
    stream_id: str
    started_at: datetime
    ended_at: datetime | None  # None while live
    live: bool
    duration_s: int  # until now while live
    title: str | None  # at the start
    category: str | None  # at the start
    viewers_avg: float  # watch time / sampled live time
    viewers_peak: int
    watch_hours: float
    follows: int
    subs_new: int
    subs_resub: int
    subs_gifted: int
    cheers: int
    bits: int
    raids_in: int
    raid_viewers_in: int
    samples: int
    sampling_gaps: int
    start_source: str  # eventsub | helix
    end_source: str | None  # offline | helix | next_stream

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["started_at"] = self.started_at.isoformat()
        out["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        return out


@dataclass(frozen=True)
class Change:
    at: datetime
    title: str
    category: str | None


@dataclass(frozen=True)
class SessionDetail:
    summary: SessionSummary
    changes: list[Change]  # title/category changes while live
    samples: list[tuple[datetime, int]]  # the viewer curve
    gaps: list[tuple[datetime, datetime, str]]  # sampling holes
    activity: dict[str, Any]  # chat_messages, chatters, Bits by kind, ads, shoutouts, charity
    top_chatters: list[dict[str, Any]]  # user_id, user_login, messages
    top_supporters: list[dict[str, Any]]  # user_id, user_login, subs, gifted, bits
    ad_breaks: list[tuple[datetime, int]]  # markers for the viewer curve: start, seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            "activity": self.activity,
            "top_chatters": self.top_chatters,
            "top_supporters": self.top_supporters,
            "ad_breaks": [[at.isoformat(), seconds] for at, seconds in self.ad_breaks],
            "changes": [
                {"at": c.at.isoformat(), "title": c.title, "category": c.category}
                for c in self.changes
            ],
            "samples": [[at.isoformat(), count] for at, count in self.samples],
            "gaps": [
                {"start": a.isoformat(), "end": b.isoformat(), "reason": r} for a, b, r in self.gaps
            ],
        }


def _summary(row: Any, now: datetime) -> SessionSummary:
    end = row["ended_at"]
    duration = int(((end or max(now, row["started_at"])) - row["started_at"]).total_seconds())
    sampled = row["sampled_s"]
    return SessionSummary(
        row["channel_id"],
        row["stream_id"],
        row["started_at"],
        end,
        end is None,
        duration,
        row["title"],
        row["category"],
        round(row["viewer_s"] / sampled, 1) if sampled else 0.0,
        row["peak_viewers"],
        round(row["viewer_s"] / 3600, 2),
        row["follows"],
        row["subs_new"],
        row["subs_resub"],
        row["subs_gifted"],
        row["cheers"],
        row["bits"],
        row["raids_in"],
        row["raid_viewers_in"],
        row["samples"],
        row["gaps"],
        row["start_source"],
        row["end_source"],
    )


async def list_sessions(
    conn: Any,
    channel_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    limit: int = 50,
    before: datetime | None = None,
    now: datetime | None = None,
) -> list[SessionSummary]:
    """Sessions overlapping [start, end), newest first; `before` (a started_at) pages on."""
    now = now or datetime.now(UTC)
    lo = start or datetime.min.replace(tzinfo=UTC)
    hi = end or datetime.max.replace(tzinfo=UTC)
    rows = await conn.fetch(LIST_SESSIONS, channel_id, lo, hi, before, limit)
    return [_summary(row, now) for row in rows]


async def get_session(
    conn: Any, channel_id: str, stream_id: str, now: datetime | None = None
) -> SessionDetail | None:
    """One session with its title/category changes, viewer curve and sampling gaps."""
    now = now or datetime.now(UTC)
    row = await conn.fetchrow(ONE_SESSION, channel_id, stream_id)
    if row is None:
        return None
    summary = _summary(row, now)
    end = summary.ended_at or now
    changes = [
        Change(r["occurred_at"], r["title"], r["category_name"])
        for r in await conn.fetch(CHANGES, channel_id, summary.started_at, end)
    ]
    samples = [
        (r["sampled_at"], r["viewer_count"])
        for r in await conn.fetch(SAMPLES, channel_id, stream_id)
    ]
    gaps = [
        (r["started_at"], r["ended_at"], r["reason"])
        for r in await conn.fetch(SESSION_GAPS, channel_id, stream_id)
    ]
    return SessionDetail(
        summary, changes, samples, gaps, *await _stream_activity(conn, channel_id, summary, end)
    )


async def _stream_activity(
    conn: Any, channel_id: str, summary: SessionSummary, end: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[tuple[datetime, int]]]:
    """Chat, supporters and ads during the stream [started_at, end)."""
    window = (summary.started_at, max(end, summary.started_at))
    totals = (await activity_totals(conn, channel_id, [window]))[0]
    activity = {
        "chat_messages": totals["chat_messages"],
        "chatters": (await unique_chatters(conn, channel_id, [window]))[0],
        "bits_power_ups": totals["bits_power_up"],
        "bits_combos": totals["bits_combo"],
        "ad_breaks": totals["ad_breaks"],
        "ad_seconds": totals["ad_seconds"],
        "shoutouts": totals["shoutouts_in"],
        "shoutout_viewers": totals["shoutout_viewers"],
        "charity": float(totals["charity_amount"]),
    }
    live = window if summary.live else None
    chatters = await session_top_chatters(conn, channel_id, summary.stream_id, live)
    if live is not None:
        rows = await conn.fetch(LIVE_TOP_SUPPORTERS, channel_id, *live, 5)
    else:
        rows = await conn.fetch(TOP_SUPPORTERS, channel_id, summary.stream_id, 5)
    supporters = [dict(r) for r in rows]
    ads = [
        (r["occurred_at"], int(r["duration_s"]) if (r["duration_s"] or "").isdigit() else 0)
        for r in await conn.fetch(AD_BREAKS, channel_id, *window)
    ]
    return activity, chatters, supporters, ads


# ----------------------------------------------------------------------------- reconciliation


@dataclass(frozen=True)
class OpenSession:
    channel_id: str
    stream_id: str
    started_at: datetime
    last_sample_at: datetime | None


async def open_sessions(conn: Any) -> list[OpenSession]:
    """Streams believed live right now (no end yet), every channel."""
    return [
        OpenSession(r["channel_id"], r["stream_id"], r["started_at"], r["last_sample_at"])
        for r in await conn.fetch(OPEN_SESSIONS)
    ]


async def open_from_helix(conn: Any, channel_id: str, stream_id: str, started_at: datetime) -> None:
    """GET /streams shows the stream live: create its session if EventSub missed the online,
    or reopen one the poller ended too early."""
    await conn.execute(OPEN_SESSION, channel_id, stream_id, started_at)


async def close_from_helix(conn: Any, channel_id: str, stream_id: str, ended_at: datetime) -> None:
    """GET /streams no longer shows it: end it at `ended_at` unless stream.offline did."""
    await conn.execute(CLOSE_SESSION, channel_id, stream_id, ended_at)
