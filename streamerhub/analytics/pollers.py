"""Helix pollers: viewer samples while live, Twitch totals every 15 min, the nightly follower check.

One sampler serves every channel: each tick it asks `GET /streams` (100 channels per call) for the
channels believed live, and every few minutes for all connected channels (a stream.online that
EventSub missed). A failed call backs off (429: until the reset Twitch names; 5xx and network
errors: exponentially); the samples it did not take show up as sampling gaps, never as
interpolated values. The Helix client is someone else's: anything with the coroutines of
`HelixStats` fits, and which channels are connected is its to say too. Errors may carry
`.status` (HTTP status) and `.retry_after` (seconds).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from streamerhub.analytics.periods import UTC, Calendar
from streamerhub.analytics.rollups import event_totals
from streamerhub.analytics.sessions import (
    close_from_helix,
    open_from_helix,
    open_sessions,
)
from streamerhub.log import get_logger

log = get_logger(__name__)


class HelixStats(Protocol):
    async def connected_channel_ids(self) -> list[str]:
        """Every connected channel (the bot's registry says which), by id."""

    async def fetch_streams(self, channel_ids: Sequence[str]) -> list[dict[str, Any]]:
        """GET /streams?user_id=…: the live ones (user_id, id, viewer_count, started_at, title,
        game_id, game_name)."""

    async def fetch_follower_total(self, channel_id: str) -> int:
        """GET /channels/followers?broadcaster_id=…: `total`."""

    async def fetch_subscriptions(self, channel_id: str) -> Mapping[str, int]:
        """GET /subscriptions?broadcaster_id=…: {"total": …, "points": …}."""


@dataclass(frozen=True)
class PollerConfig:
    sample_interval_s: float = 60.0
    sample_slack_s: int = 30  # a sample counts for at most interval + slack
    discover_every_s: float = 300.0  # also poll channels not known to be live
    totals_interval_s: float = 900.0
    max_backoff_s: float = 600.0
    offline_after_misses: int = 3  # polls without a stream before the poller ends it…
    min_session_age_s: float = 300.0  # …and not before this: Twitch lists new streams late

    @property
    def max_span_s(self) -> int:
        return max(1, min(900, int(self.sample_interval_s + self.sample_slack_s)))


RETRY_SOON_S = 20.0  # a totals round that met a channel not connected yet is retried this soon

INSERT_SAMPLES = """
INSERT INTO viewer_samples (channel_id, stream_id, sampled_at, viewer_count, max_span_s, title,
                            category_id, category_name)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int[], $5::int[], $6::text[],
                     $7::text[], $8::text[])
    ON CONFLICT DO NOTHING"""

INSERT_TOTALS = """
INSERT INTO twitch_totals (channel_id, taken_at, followers, subscribers, subscriber_points)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"""

# The snapshot nearest to a day boundary (within a day of it).
SNAPSHOT_NEAR = """
SELECT taken_at, followers FROM twitch_totals
 WHERE channel_id = $1 AND followers IS NOT NULL
   AND taken_at > $2::timestamptz - interval '1 day'
   AND taken_at < $2::timestamptz + interval '1 day'
 ORDER BY abs(extract(epoch FROM taken_at - $2::timestamptz)), taken_at LIMIT 1"""

UPSERT_CHECK = """
INSERT INTO follower_checks (channel_id, day, from_at, to_at, total_from, total_to,
                             follow_events, difference)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (channel_id, day) DO UPDATE SET
       from_at = excluded.from_at, to_at = excluded.to_at, total_from = excluded.total_from,
       total_to = excluded.total_to, follow_events = excluded.follow_events,
       difference = excluded.difference, checked_at = now()"""

HAS_CHECK = "SELECT 1 FROM follower_checks WHERE channel_id = $1 AND day = $2"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Backoff:
    """429: wait what Twitch says (Ratelimit-Reset); other failures: doubling, capped, jittered."""

    def __init__(self, base_s: float, max_s: float) -> None:
        self.base_s, self.max_s, self.failures = base_s, max_s, 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self, exc: BaseException) -> float:
        self.failures += 1
        retry_after = getattr(exc, "retry_after", None)
        if getattr(exc, "status", None) == 429 and retry_after:
            return min(self.max_s, max(1.0, float(retry_after)))
        delay: float = min(self.max_s, self.base_s * 2 ** (self.failures - 1))
        return delay * random.uniform(0.8, 1.2)


class ViewerSampler:
    """One GET /streams round for every channel: samples, sessions opened and ended."""

    def __init__(
        self,
        pool: Any,
        helix: HelixStats,
        config: PollerConfig,
        channels: Callable[[], Awaitable[list[str]]],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.pool, self.helix, self.config = pool, helix, config
        self.channels, self.clock = channels, clock
        self._last_discovery: datetime | None = None
        self._misses: dict[tuple[str, str], tuple[int, datetime]] = {}

    async def sample_once(self) -> int:
        """Poll once; returns the number of samples stored."""
        now = self.clock().astimezone(UTC).replace(microsecond=0)
        believed_live = await open_sessions(self.pool)
        wanted = {s.channel_id for s in believed_live}
        discovering = self._discovery_due(now)
        if discovering:
            wanted |= set(await self.channels())
        if not wanted:
            return 0
        streams = await self._fetch(sorted(wanted))
        if discovering:
            self._last_discovery = now  # only once it succeeded
        live = {
            s["user_id"]: s
            for s in streams
            if s.get("user_id") in wanted and s.get("type", "live") == "live"
        }
        async with self.pool.acquire() as conn, conn.transaction():
            for channel_id, stream in live.items():
                started = _instant(stream["started_at"])
                await open_from_helix(conn, channel_id, stream["id"], started)
            if live:
                await conn.execute(INSERT_SAMPLES, *self._sample_columns(live, now))
            for session in believed_live:
                await self._check_still_live(conn, session, live, now)
        return len(live)

    def _discovery_due(self, now: datetime) -> bool:
        last = self._last_discovery
        return last is None or (now - last).total_seconds() >= self.config.discover_every_s

    async def _fetch(self, channel_ids: list[str]) -> list[dict[str, Any]]:
        streams: list[dict[str, Any]] = []
        for i in range(0, len(channel_ids), 100):
            streams += await self.helix.fetch_streams(channel_ids[i : i + 100])
        return streams

    def _sample_columns(self, live: dict[str, dict[str, Any]], now: datetime) -> list[list[Any]]:
        rows = [
            (
                channel_id,
                s["id"],
                now,
                int(s.get("viewer_count") or 0),
                self.config.max_span_s,
                s.get("title"),
                s.get("game_id") or None,
                s.get("game_name") or None,
            )
            for channel_id, s in sorted(live.items())
        ]
        return [list(column) for column in zip(*rows, strict=True)]

    async def _check_still_live(
        self, conn: Any, session: Any, live: dict[str, Any], now: datetime
    ) -> None:
        key = (session.channel_id, session.stream_id)
        if session.channel_id in live:
            self._misses.pop(key, None)
            return
        misses, first_miss = self._misses.get(key, (0, now))
        self._misses[key] = (misses + 1, first_miss)
        old_enough = (now - session.started_at).total_seconds() >= self.config.min_session_age_s
        if misses + 1 >= self.config.offline_after_misses and old_enough:
            # The first poll that no longer saw it: its last sample counts until then, as any
            # sample counts until the next observation (and at most interval + slack).
            ended_at = first_miss
            await close_from_helix(conn, session.channel_id, session.stream_id, ended_at)
            self._misses.pop(key, None)
            log.info(
                "stream_ended_by_poller",
                channel_id=session.channel_id,
                stream_id=session.stream_id,
                ended_at=ended_at.isoformat(),
            )


@dataclass(frozen=True)
class FollowerCheck:
    channel_id: str
    day: date
    from_at: datetime
    to_at: datetime
    total_from: int
    total_to: int
    follow_events: int

    @property
    def difference(self) -> int:
        """Positive: follows Twitch counted that we did not store; negative: unfollows."""
        return (self.total_to - self.total_from) - self.follow_events


class TotalsSnapshotter:
    """Twitch's follower and subscriber totals for every connected channel, and the daily check."""

    def __init__(
        self,
        pool: Any,
        helix: HelixStats,
        calendar: Calendar,
        channels: Callable[[], Awaitable[list[str]]],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.pool, self.helix, self.calendar = pool, helix, calendar
        self.channels, self.clock = channels, clock
        self.retry_soon = False

    async def snapshot_once(self) -> int:
        """One snapshot per channel (a missing scope leaves that figure empty); returns count."""
        now = self.clock().astimezone(UTC)
        stored = 0
        self.retry_soon = False
        for channel_id in await self.channels():
            followers = await self._optional(
                self.helix.fetch_follower_total(channel_id), channel_id, "followers"
            )
            subs = await self._optional(
                self.helix.fetch_subscriptions(channel_id), channel_id, "subscriptions"
            )
            if followers is None and subs is None:
                continue
            await self.pool.execute(
                INSERT_TOTALS,
                channel_id,
                now,
                followers,
                (subs or {}).get("total"),
                (subs or {}).get("points"),
            )
            stored += 1
        return stored

    async def _optional(self, call: Awaitable[Any], channel_id: str, what: str) -> Any:
        try:
            return await call
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 429:
                raise  # the rate limit is everyone's: back off the round
            # One channel's failure (missing scope, not connected here, a 5xx) skips only its
            # figure. Without an HTTP status the channel is not connected yet (the daemon is
            # starting): try again soon rather than a whole interval later.
            self.retry_soon = self.retry_soon or status is None
            log.warning(
                "totals_snapshot_skipped",
                channel_id=channel_id,
                figure=what,
                status=status,
                error=str(exc),
            )
            return None

    async def check_due(self) -> list[FollowerCheck]:
        """Check yesterday (the streamer's) for every channel not checked yet."""
        yesterday = self.calendar.day_of(self.clock()) - timedelta(days=1)
        done = []
        for channel_id in await self.channels():
            if await self.pool.fetchval(HAS_CHECK, channel_id, yesterday):
                continue
            check = await check_followers(self.pool, self.calendar, channel_id, yesterday)
            if check:
                done.append(check)
        return done


async def check_followers(
    conn: Any, calendar: Calendar, channel_id: str, day: date
) -> FollowerCheck | None:
    """Compare the followers total's change over `day` (between the snapshots nearest its start
    and its end) with the follows stored between the same two instants, and record it; None
    without two snapshots to compare."""
    lo, hi = calendar.day_start(day), calendar.day_start(day + timedelta(days=1))
    first = await conn.fetchrow(SNAPSHOT_NEAR, channel_id, lo)
    last = await conn.fetchrow(SNAPSHOT_NEAR, channel_id, hi)
    if first is None or last is None or last["taken_at"] <= first["taken_at"]:
        return None
    [events] = await event_totals(conn, channel_id, [(first["taken_at"], last["taken_at"])])
    check = FollowerCheck(
        channel_id,
        day,
        first["taken_at"],
        last["taken_at"],
        first["followers"],
        last["followers"],
        events["follows"],
    )
    await conn.execute(
        UPSERT_CHECK,
        channel_id,
        day,
        check.from_at,
        check.to_at,
        check.total_from,
        check.total_to,
        check.follow_events,
        check.difference,
    )
    if check.difference:
        log.info(
            "follower_check_difference",
            channel_id=channel_id,
            day=day.isoformat(),
            total_change=check.total_to - check.total_from,
            follow_events=check.follow_events,
            difference=check.difference,
        )
    return check


class AnalyticsPollers:
    """Both loops, for the composition root: `await pollers.start()` … `await pollers.stop()`."""

    def __init__(
        self,
        pool: Any,
        helix: HelixStats,
        calendar: Calendar,
        config: PollerConfig = PollerConfig(),
        *,
        channels: Callable[[], Awaitable[list[str]]] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        channels = channels or helix.connected_channel_ids
        self.sampler = ViewerSampler(pool, helix, config, channels, clock)
        self.totals = TotalsSnapshotter(pool, helix, calendar, channels, clock)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self._tasks:
            self._stop.clear()
            self._tasks = [
                asyncio.create_task(self._sample_loop(), name="viewer_sampler"),
                asyncio.create_task(self._totals_loop(), name="totals_snapshots"),
            ]

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop both loops (idempotent): ask, wait a little, then cancel."""
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sample_loop(self) -> None:
        backoff = Backoff(self.config.sample_interval_s, self.config.max_backoff_s)
        while not self._stop.is_set():
            started = time.monotonic()
            delay = self.config.sample_interval_s
            try:
                await self.sampler.sample_once()
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - keep sampling through any outage
                delay = backoff.next_delay(exc)
                log.warning(
                    "viewer_sampling_failed",
                    status=getattr(exc, "status", None),
                    error=str(exc) or type(exc).__name__,
                    retry_in_s=round(delay, 1),
                )
            await self._sleep(delay - (time.monotonic() - started))

    async def _totals_loop(self) -> None:
        backoff = Backoff(60.0, self.config.max_backoff_s)
        while not self._stop.is_set():
            started = time.monotonic()
            delay = self.config.totals_interval_s
            try:
                await self.totals.snapshot_once()
                await self.totals.check_due()
                backoff.reset()
                if self.totals.retry_soon:
                    delay = min(delay, RETRY_SOON_S)
            except Exception as exc:  # noqa: BLE001 - keep polling through any outage
                delay = backoff.next_delay(exc)
                log.warning(
                    "totals_snapshot_failed",
                    status=getattr(exc, "status", None),
                    error=str(exc) or type(exc).__name__,
                    retry_in_s=round(delay, 1),
                )
            await self._sleep(delay - (time.monotonic() - started))

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))
        except asyncio.TimeoutError:
            pass


def _instant(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
