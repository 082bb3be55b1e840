"""Dashboard queries: stat cards with the previous period, time series per bucket, first data.

Every figure comes from the rollups of migration 0003 (kept by triggers), cut along the period's
bucket boundaries by `periods.split_aligned`; tests prove the answers equal naive queries over
the raw rows. `conn` is an asyncpg connection or pool (anything with fetch/fetchrow/fetchval).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from streamerhub.analytics.periods import (
    UTC,
    Calendar,
    Period,
    all_time_period,
    calendar_period,
    custom_period,
)
from streamerhub.analytics.rollups import (
    Range,
    activity_totals,
    event_totals,
    gap_seconds,
    sampling_gap_seconds,
    streamed_seconds,
    unique_chatters,
    viewer_totals,
)

# ----------------------------------------------------------------------------- SQL

# The latest Twitch totals snapshot before each instant.
TOTALS_AT = """
SELECT k.i, t.followers, t.subscribers, t.subscriber_points, t.taken_at
  FROM unnest($2::timestamptz[]) WITH ORDINALITY AS k(at, i)
  LEFT JOIN LATERAL (SELECT * FROM twitch_totals t
                      WHERE t.channel_id = $1 AND t.taken_at < k.at AND t.followers IS NOT NULL
                      ORDER BY t.taken_at DESC LIMIT 1) t ON true
 ORDER BY k.i"""

# Followers at a window's start: the last snapshot before it, else the first one inside it.
FOLLOWERS_FROM = """
SELECT k.i, coalesce(
         (SELECT t.followers FROM twitch_totals t
           WHERE t.channel_id = $1 AND t.taken_at < k.lo AND t.followers IS NOT NULL
           ORDER BY t.taken_at DESC LIMIT 1),
         (SELECT t.followers FROM twitch_totals t
           WHERE t.channel_id = $1 AND t.taken_at >= k.lo AND t.taken_at < k.hi
             AND t.followers IS NOT NULL
           ORDER BY t.taken_at LIMIT 1)) AS followers
  FROM unnest($2::timestamptz[], $3::timestamptz[]) WITH ORDINALITY AS k(lo, hi, i)
 ORDER BY k.i"""

SUBS_AT = """
SELECT k.i, t.subscribers, t.subscriber_points
  FROM unnest($2::timestamptz[]) WITH ORDINALITY AS k(at, i)
  LEFT JOIN LATERAL (SELECT * FROM twitch_totals t
                      WHERE t.channel_id = $1 AND t.taken_at < k.at AND t.subscribers IS NOT NULL
                      ORDER BY t.taken_at DESC LIMIT 1) t ON true
 ORDER BY k.i"""

CURRENT_VIEWERS = """
SELECT s.stream_id, s.last_viewer_count, s.last_sample_at, v.max_span_s
  FROM stream_sessions s
  LEFT JOIN viewer_samples v ON v.channel_id = s.channel_id AND v.sampled_at = s.last_sample_at
 WHERE s.channel_id = $1 AND s.ended_at IS NULL
 ORDER BY s.started_at DESC LIMIT 1"""

GAPS = """
SELECT 'events' AS kind, started_at, coalesce(ended_at, $4) AS ended_at, reason
  FROM eventsub_gaps
 WHERE channel_id = $1 AND started_at < $3 AND coalesce(ended_at, $4) > $2
UNION ALL
SELECT 'viewers', started_at, ended_at, reason FROM viewer_sample_gaps
 WHERE $5 AND channel_id = $1 AND started_at < $3 AND ended_at > $2
 ORDER BY 2, 1"""

FIRST_DATA = """
SELECT least((SELECT min(bucket) FROM analytics_event_rollup WHERE channel_id = $1 AND res = 86400),
             (SELECT min(started_at) FROM stream_sessions WHERE channel_id = $1),
             (SELECT min(taken_at) FROM twitch_totals WHERE channel_id = $1),
             (SELECT min(bucket) FROM analytics_viewer_rollup
               WHERE channel_id = $1 AND res = 86400))"""


# ----------------------------------------------------------------------------- periods


async def first_data(conn: Any, channel_id: str) -> datetime | None:
    """When the channel's history starts (events, sessions, samples or totals), if any."""
    first: datetime | None = await conn.fetchval(FIRST_DATA, channel_id)
    return first


async def load_period(
    conn: Any,
    calendar: Calendar,
    channel_id: str,
    kind: str,
    now: datetime | None = None,
    *,
    day: Any = None,
    first_day: Any = None,
    last_day: Any = None,
) -> Period:
    """The period the dashboard asked for: day/week/month (holding `day`, default today),
    all (from the channel's first data) or custom (first_day … last_day)."""
    now = now or datetime.now(UTC)
    if kind == "all":
        return all_time_period(calendar, await first_data(conn, channel_id), now)
    if kind == "custom":
        return custom_period(calendar, first_day, last_day)
    return calendar_period(calendar, kind, day if day is not None else now)


# ----------------------------------------------------------------------------- stat cards


@dataclass(frozen=True)
class Card:
    """One stat card; `previous` is the same figure over the comparison window."""

    value: float | int | None
    previous: float | int | None
    unit: str

    @property
    def change(self) -> float | int | None:
        if self.value is None or self.previous is None:
            return None
        return self.value - self.previous

    @property
    def change_pct(self) -> float | None:
        if self.change is None or not self.previous:
            return None
        return round(100.0 * self.change / self.previous, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "change": self.change, "change_pct": self.change_pct}


CARD_UNITS = {
    "followers_total": "followers",
    "followers_gained": "followers",
    "followers_net": "followers",
    "followers_lost": "followers",
    "subs_total": "subs",
    "subs_points": "points",
    "subs_new": "subs",
    "subs_resub": "subs",
    "subs_gifted": "subs",
    "viewers_current": "viewers",
    "viewers_avg": "viewers",
    "viewers_peak": "viewers",
    "watch_hours": "hours",
    "watch_coverage": "percent",
    "watch_partial": "",
    "hours_streamed": "hours",
    "bits": "bits",
    "bits_cheers": "bits",
    "bits_power_ups": "bits",
    "bits_combos": "bits",
    "raids": "raids",
    "raid_viewers": "viewers",
    "chat_messages": "messages",
    "chatters": "chatters",
    "messages_per_minute": "messages",
    "ad_breaks": "ads",
    "ad_minutes": "minutes",
    "shoutouts": "shoutouts",
    "shoutout_viewers": "viewers",
    "charity": "amount",
}


@dataclass(frozen=True)
class StatCards:
    channel_id: str
    period: Period
    window: Range  # [period start, until): what has happened so far
    previous_window: Range | None  # the comparison window, or None for all time
    cards: dict[str, Card]

    def to_dict(self) -> dict[str, Any]:
        prev = self.previous_window
        return {
            "channel_id": self.channel_id,
            "period": self.period.to_dict(),
            "window": [self.window[0].isoformat(), self.window[1].isoformat()],
            "previous_window": [prev[0].isoformat(), prev[1].isoformat()] if prev else None,
            "cards": {name: card.to_dict() for name, card in self.cards.items()},
        }


async def stat_cards(
    conn: Any, channel_id: str, period: Period, now: datetime | None = None
) -> StatCards:
    """Every card of the period so far, each with the same figure over the previous window."""
    now = now or datetime.now(UTC)
    window = (period.start, period.until(now))
    previous = period.previous(now)
    windows = [window] + ([previous] if previous else [])
    events = await event_totals(conn, channel_id, windows)
    viewers = await viewer_totals(conn, channel_id, windows)
    streamed = await streamed_seconds(conn, channel_id, windows, now)
    activity = await activity_totals(conn, channel_id, windows)
    chatters = await unique_chatters(conn, channel_id, windows)
    holes = await sampling_gap_seconds(conn, channel_id, windows)
    at_end = await _totals_at(conn, channel_id, [w[1] for w in windows])
    at_start = await conn.fetch(
        FOLLOWERS_FROM, channel_id, [w[0] for w in windows], [w[1] for w in windows]
    )
    figures = [
        {
            **_figures(events[i], viewers[i], streamed[i], at_start[i]["followers"], at_end[i]),
            **_activity_figures(events[i], activity[i], chatters[i], streamed[i]),
            "watch_partial": holes[i] > 0,
        }
        for i in range(len(windows))
    ]
    figures[0]["viewers_current"] = await current_viewers(conn, channel_id, now)
    cards = {
        name: Card(figures[0].get(name), figures[1].get(name) if previous else None, unit)
        for name, unit in CARD_UNITS.items()
    }
    return StatCards(channel_id, period, window, previous, cards)


def _figures(
    events: dict[str, int],
    viewers: dict[str, int],
    streamed_s: float,
    followers_at_start: int | None,
    at_end: dict[str, Any],
) -> dict[str, Any]:
    net = lost = None
    if followers_at_start is not None and at_end["followers"] is not None:
        net = at_end["followers"] - followers_at_start
        # Twitch sends no event for an unfollow: what the total lost beyond the new follows.
        # More net growth than follows stored means follows were missed: unfollows unknown.
        lost = events["follows"] - net if events["follows"] >= net else None
    return {
        "followers_total": at_end["followers"],
        "followers_gained": events["follows"],
        "followers_net": net,
        "followers_lost": lost,
        "subs_total": at_end["subscribers"],
        "subs_points": at_end["subscriber_points"],
        "subs_new": events["subs_new"],
        "subs_resub": events["subs_resub"],
        "subs_gifted": events["subs_gifted"],
        "viewers_avg": average_viewers(viewers),
        "viewers_peak": viewers["peak"],
        "watch_hours": round(viewers["viewer_s"] / 3600, 2),
        "watch_coverage": coverage(viewers["live_s"], streamed_s),
        "hours_streamed": round(streamed_s / 3600, 2),
        "raids": events["raids_in"],
        "raid_viewers": events["raid_viewers_in"],
    }


def _activity_figures(
    events: dict[str, int], activity: dict[str, Any], chatters: int, streamed_s: float
) -> dict[str, Any]:
    """Figures from the raw log (migration 0008). Bits: channel.cheer's Bits plus the
    Power-ups and combos of channel.bits.use (whose cheers are channel.cheer's: not added)."""
    minutes_live = streamed_s / 60
    return {
        "bits": events["bits"] + activity["bits_power_up"] + activity["bits_combo"],
        "bits_cheers": events["bits"],
        "bits_power_ups": activity["bits_power_up"],
        "bits_combos": activity["bits_combo"],
        "chat_messages": activity["chat_messages"],
        "chatters": chatters,
        "messages_per_minute": round(activity["chat_messages"] / minutes_live, 1)
        if minutes_live
        else None,
        "ad_breaks": activity["ad_breaks"],
        "ad_minutes": round(activity["ad_seconds"] / 60, 1),
        "shoutouts": activity["shoutouts_in"],
        "shoutout_viewers": activity["shoutout_viewers"],
        "charity": float(activity["charity_amount"]),
    }


def average_viewers(viewers: dict[str, int]) -> float:
    """Average concurrent viewers, as Twitch's stream summary and the analytics sites count
    them: watch time ÷ the live time the viewer samples cover, one decimal. Sampling gaps count
    neither as watch time nor as live time (never as zero viewers): see `coverage`."""
    return round(viewers["viewer_s"] / viewers["live_s"], 1) if viewers["live_s"] else 0.0


def coverage(sampled_s: float, streamed_s: float) -> float | None:
    """The percentage of live time the viewer samples cover (None when nothing was live).
    A minute before each stream's first sample is normal; `watch_partial` says when samples
    were missing (a sampling gap: connected mid-stream, missed polls)."""
    if streamed_s <= 0:
        return None
    return min(100.0, round(100.0 * sampled_s / streamed_s, 1))


async def _totals_at(conn: Any, channel_id: str, instants: list[datetime]) -> list[dict[str, Any]]:
    followers = await conn.fetch(TOTALS_AT, channel_id, instants)
    subs = await conn.fetch(SUBS_AT, channel_id, instants)
    return [
        {
            "followers": f["followers"],
            "subscribers": s["subscribers"],
            "subscriber_points": s["subscriber_points"],
        }
        for f, s in zip(followers, subs, strict=False)
    ]


async def current_viewers(conn: Any, channel_id: str, now: datetime) -> int | None:
    """Viewers now: 0 when offline; None when live but no recent sample (we do not know)."""
    row = await conn.fetchrow(CURRENT_VIEWERS, channel_id)
    if row is None:
        return 0
    if row["last_sample_at"] is None:
        return None
    fresh = (now - row["last_sample_at"]).total_seconds() <= 2 * (row["max_span_s"] or 90)
    return row["last_viewer_count"] if fresh else None


# ----------------------------------------------------------------------------- time series


@dataclass(frozen=True)
class Gap:
    """Capture was missing: `events` (EventSub down) or `viewers` (no samples while live)."""

    kind: str
    start: datetime
    end: datetime
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Point:
    start: datetime
    end: datetime
    label: datetime  # bucket start on the streamer's wall clock
    follows: int
    subs_new: int
    subs_resub: int
    subs_gifted: int
    bits: int
    cheers: int
    raids_in: int
    viewers_avg: float
    viewers_peak: int
    watch_hours: float
    hours_streamed: float
    followers_total: int | None
    followers_net: int | None  # Twitch's total at the end minus at the start (None: unknown)
    chat_messages: int
    ad_breaks: int
    gap: bool  # some capture was missing inside this bucket
    gap_seconds: float  # how much (EventSub outages + viewer sampling holes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("start", "end", "label"):
            out[key] = out[key].isoformat()
        return out


@dataclass(frozen=True)
class Series:
    """One point per bucket. `gaps` lists every EventSub outage in the period, and the viewer
    sampling holes too on hourly charts (on coarser ones each point says how much was missing;
    a session's page lists its holes exactly)."""

    channel_id: str
    period: Period
    points: list[Point]
    gaps: list[Gap]

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "period": self.period.to_dict(),
            "bucket": self.period.bucket,
            "points": [p.to_dict() for p in self.points],
            "gaps": [g.to_dict() for g in self.gaps],
        }


async def time_series(
    conn: Any, channel_id: str, period: Period, now: datetime | None = None
) -> Series:
    """One point per bucket of the period (empty buckets are zeros), gaps marked."""
    now = now or datetime.now(UTC)
    buckets = period.buckets()
    ranges = [(b.start, b.end) for b in buckets]
    events = await event_totals(conn, channel_id, ranges)
    viewers = await viewer_totals(conn, channel_id, ranges)
    streamed = await streamed_seconds(conn, channel_id, ranges, now)
    activity = await activity_totals(conn, channel_id, ranges)
    followers = await _followers_at(conn, channel_id, [min(b.end, now) for b in buckets])
    starts = await conn.fetch(
        FOLLOWERS_FROM, channel_id, [b.start for b in buckets], [min(b.end, now) for b in buckets]
    )
    missing = await gap_seconds(conn, channel_id, ranges, now)
    gaps = await capture_gaps(
        conn, channel_id, period.start, period.end, now, viewers=period.bucket in ("15min", "hour")
    )
    points = []
    for i, b in enumerate(buckets):
        e, v, a = events[i], viewers[i], activity[i]
        total = followers[i] if b.start < now else None
        at_start = starts[i]["followers"]
        points.append(
            Point(
                b.start,
                b.end,
                b.label,
                e["follows"],
                e["subs_new"],
                e["subs_resub"],
                e["subs_gifted"],
                e["bits"] + a["bits_power_up"] + a["bits_combo"],
                e["cheers"],
                e["raids_in"],
                average_viewers(v),
                v["peak"],
                round(v["viewer_s"] / 3600, 2),
                round(streamed[i] / 3600, 2),
                total,
                None if total is None or at_start is None else total - at_start,
                a["chat_messages"],
                a["ad_breaks"],
                missing[i] > 0,
                round(missing[i], 1),
            )
        )
    return Series(channel_id, period, points, gaps)


async def _followers_at(conn: Any, channel_id: str, instants: list[datetime]) -> list[int | None]:
    return [row["followers"] for row in await conn.fetch(TOTALS_AT, channel_id, instants)]


async def capture_gaps(
    conn: Any,
    channel_id: str,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
    *,
    viewers: bool = True,
) -> list[Gap]:
    """EventSub outages (and, unless viewers=False, viewer-sampling holes) overlapping
    [start, end)."""
    now = now or datetime.now(UTC)
    rows = await conn.fetch(GAPS, channel_id, start, end, now, viewers)
    return [Gap(r["kind"], r["started_at"], r["ended_at"], r["reason"]) for r in rows]
