"""The Helix pollers against a fake Helix: samples, missed streams, backoff, totals, the check."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

from analytics_data import add_event, z

from streamerhub.analytics.periods import Calendar
from streamerhub.analytics.pollers import (
    AnalyticsPollers,
    Backoff,
    PollerConfig,
    TotalsSnapshotter,
    ViewerSampler,
)
from streamerhub.db import Database

T0 = z("2026-03-29T20:00:00Z")


class HelixError(Exception):
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.retry_after = status, retry_after


class FakeHelix:
    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.failures: list[Exception] = []
        self.followers = {"c1": 1000}
        self.subs: dict[str, Any] = {"c1": HelixError(403)}
        self.asked: list[list[str]] = []

    async def connected_channel_ids(self) -> list[str]:
        return sorted(self.followers)

    async def fetch_streams(self, channel_ids):
        self.asked.append(list(channel_ids))
        if self.failures:
            raise self.failures.pop(0)
        return [s for ch, s in self.live.items() if ch in channel_ids]

    async def fetch_follower_total(self, channel_id):
        return self.followers[channel_id]

    async def fetch_subscriptions(self, channel_id):
        answer = self.subs[channel_id]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def stream(viewers: int, stream_id: str = "s9") -> dict[str, Any]:
    return {
        "user_id": "c1",
        "id": stream_id,
        "type": "live",
        "viewer_count": viewers,
        "started_at": "2026-03-29T19:55:00Z",
        "title": "Speedrun",
        "game_id": "42",
        "game_name": "Celeste",
    }


async def channels() -> list[str]:
    return ["c1"]


async def test_sampler_opens_a_stream_eventsub_missed_samples_it_and_ends_it(db: Database) -> None:
    helix, clock = FakeHelix(), Clock(T0)
    sampler = ViewerSampler(db.pool, helix, PollerConfig(), channels, clock)
    helix.live["c1"] = stream(50)
    assert await sampler.sample_once() == 1
    clock.tick(60.4)
    helix.live["c1"] = stream(70)
    assert await sampler.sample_once() == 1
    del helix.live["c1"]
    for _ in range(3):  # gone for three polls: ended
        clock.tick(60)
        assert await sampler.sample_once() == 0
    session = await db.pool.fetchrow("SELECT * FROM stream_sessions")
    assert (session["stream_id"], session["start_source"]) == ("s9", "helix")
    assert session["started_at"] == z("2026-03-29T19:55:00Z")
    assert (session["ended_at"], session["end_source"]) == (z("2026-03-29T20:02:00Z"), "helix")
    samples = await db.pool.fetch(
        "SELECT sampled_at, viewer_count, span_s, title, category_name "
        "FROM viewer_samples ORDER BY 1"
    )
    assert [tuple(s) for s in samples] == [
        (T0, 50, 60, "Speedrun", "Celeste"),
        (T0 + timedelta(seconds=60), 70, 60, "Speedrun", "Celeste"),
    ]
    assert session["viewer_s"] == 50 * 60 + 70 * 60
    # Live again under the same id (Helix dropped it for a while): the session reopens.
    helix.live["c1"] = stream(80)
    clock.tick(60)
    await sampler.sample_once()
    assert await db.pool.fetchval("SELECT ended_at FROM stream_sessions") is None


async def test_a_stream_eventsub_announced_is_polled_and_not_ended_while_helix_lags(
    db: Database,
) -> None:
    helix, clock = FakeHelix(), Clock(T0)
    async with db.pool.acquire() as conn:
        await add_event(conn, "online", "c1", T0 - timedelta(seconds=30), stream_id="s9")
    sampler = ViewerSampler(db.pool, helix, PollerConfig(), lambda: _none(), clock)
    for _ in range(4):  # Twitch lists new streams late
        assert await sampler.sample_once() == 0
        clock.tick(60)
    assert helix.asked == [["c1"]] * 4
    assert await db.pool.fetchval("SELECT ended_at FROM stream_sessions") is None


async def _none() -> list[str]:
    return []


async def test_failed_polls_back_off_and_leave_a_recorded_gap(db: Database) -> None:
    backoff = Backoff(60, 600)
    assert backoff.next_delay(HelixError(429, retry_after=37)) == 37
    assert 96 <= backoff.next_delay(HelixError(503)) <= 144  # doubling, with jitter
    helix, clock = FakeHelix(), Clock(T0)
    sampler = ViewerSampler(db.pool, helix, PollerConfig(), channels, clock)
    helix.live["c1"] = stream(10)
    await sampler.sample_once()
    helix.failures = [HelixError(500), HelixError(429, retry_after=120)]
    for _ in range(2):
        clock.tick(60)
        try:
            await sampler.sample_once()
        except HelixError:
            pass
    clock.tick(180)
    await sampler.sample_once()
    gaps = await db.pool.fetch("SELECT started_at, ended_at, reason FROM viewer_sample_gaps")
    assert [tuple(g) for g in gaps] == [
        (z("2026-03-29T19:55Z"), T0, "missed_samples"),  # live 5 min before we sampled
        (T0 + timedelta(seconds=90), T0 + timedelta(seconds=300), "missed_samples"),
    ]
    assert (
        await db.pool.fetchval("SELECT span_s FROM viewer_samples WHERE sampled_at = $1", T0) == 90
    )


async def test_totals_snapshots_and_the_nightly_follower_check(db: Database) -> None:
    helix, clock = FakeHelix(), Clock(z("2026-03-28T23:05Z"))  # 00:05 on the 29th, Paris
    cal = Calendar("Europe/Paris")
    totals = TotalsSnapshotter(db.pool, helix, cal, channels, clock)
    assert await totals.snapshot_once() == 1  # subs: missing scope, skipped
    async with db.pool.acquire() as conn:
        for minute in range(7):
            await add_event(
                conn, "follow", "c1", z("2026-03-29T10:00Z") + timedelta(minutes=minute)
            )
    helix.followers["c1"] = 1010
    helix.subs["c1"] = {"total": 12, "points": 15}
    clock.now = z("2026-03-29T22:05Z")  # 00:05 on the 30th
    await totals.snapshot_once()
    rows = await db.pool.fetch(
        "SELECT followers, subscribers, subscriber_points FROM twitch_totals ORDER BY taken_at"
    )
    assert [tuple(r) for r in rows] == [(1000, None, None), (1010, 12, 15)]
    [check] = await totals.check_due()
    assert (check.day, check.total_from, check.total_to, check.follow_events) == (
        date(2026, 3, 29),
        1000,
        1010,
        7,
    )
    assert check.difference == 3  # Twitch counted 3 we never saw
    stored = await db.pool.fetchrow("SELECT * FROM follower_checks")
    assert (stored["day"], stored["difference"]) == (date(2026, 3, 29), 3)
    assert await totals.check_due() == []  # once per day


async def test_pollers_run_until_stopped_through_failures(db: Database) -> None:
    helix = FakeHelix()
    helix.live["c1"] = stream(5)
    helix.failures = [HelixError(502)]
    pollers = AnalyticsPollers(
        db.pool, helix, Calendar(), PollerConfig(sample_interval_s=0.05), channels=channels
    )
    await pollers.start()
    await pollers.start()  # idempotent
    for _ in range(100):
        if await db.pool.fetchval("SELECT count(*) FROM viewer_samples"):
            break
        await asyncio.sleep(0.05)
    await pollers.stop()
    await pollers.stop()
    assert await db.pool.fetchval("SELECT count(*) FROM viewer_samples") >= 1
    assert await db.pool.fetchval("SELECT count(*) FROM twitch_totals") == 1
