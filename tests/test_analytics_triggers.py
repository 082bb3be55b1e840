"""The rollup triggers under the store's own batches: many streams in one statement, ties."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from analytics_data import add_event, add_samples, z
from test_analytics_rollups import (
    assert_events_match_naive,
    assert_sessions_match_naive,
)
from test_events import EVENTS, frame_text

from streamerhub.db import Database
from streamerhub.events.frames import parse_frame
from streamerhub.events.store import EventStore

CHANNEL = "1337"  # the broadcaster of test_events' events
BASE = z("2026-03-27T20:00Z")


def stamp(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def online(n: int, minutes: float) -> str:
    event = {**EVENTS["stream.online"][1], "id": f"s{n}", "started_at": stamp(minutes)}
    return frame_text("stream.online", f"on-{n}", event, stamp=stamp(minutes))


def offline(n: int, minutes: float) -> str:
    return frame_text("stream.offline", f"off-{n}", stamp=stamp(minutes))


def fact(kind: str, n: int, minutes: float) -> str:
    sub_type = {
        "follow": "channel.follow",
        "cheer": "channel.cheer",
        "sub": "channel.subscribe",
        "raid": "channel.raid",
    }[kind]
    event = dict(EVENTS[sub_type][1])
    if kind == "follow":
        event.update(user_id=f"u{n}", followed_at=stamp(minutes))
    return frame_text(sub_type, f"{kind}-{n}", event, stamp=stamp(minutes))


async def store(db: Database, folder: Path, frames: list[str], batch_size: int = 2000) -> None:
    async with EventStore(db, folder, batch_size=batch_size) as events:
        for text in frames:
            events.submit(parse_frame(text))
        await events.drain()


@pytest.mark.parametrize("seed", [7, 8, 9])
async def test_many_streams_and_events_in_one_batch_equal_naive(
    db: Database, tmp_path: Path, seed: int
) -> None:
    """A batch opens, ends and follows many streams at once (set-based settling): the sessions
    and rollups equal the naive definitions, and again after later, out-of-order batches."""
    rng = random.Random(seed)
    frames = []
    for n in range(12):
        frames += [online(n, n * 90), offline(n, n * 90 + 60 + rng.randint(0, 40))]
    frames += [
        fact(rng.choice(["follow", "cheer", "sub", "raid"]), n, rng.uniform(-30, 1200))
        for n in range(300)
    ]
    rng.shuffle(frames)
    await store(db, tmp_path / "one", frames)
    async with db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM stream_sessions") == 12
        await assert_sessions_match_naive(conn, CHANNEL)
        await assert_events_match_naive(conn)
    # Later batches: a stream slotted between others, events and an offline arriving late.
    late = [
        online(50, 100),
        fact("cheer", 900, 101),
        fact("follow", 901, 170),
        offline(50, 150),
        online(51, 2000),
        fact("sub", 902, 2001),
    ]
    await store(db, tmp_path / "two", late, batch_size=2)
    async with db.pool.acquire() as conn:
        await assert_sessions_match_naive(conn, CHANNEL)
        await assert_events_match_naive(conn)


async def test_sessions_sharing_a_start_time(db: Database, tmp_path: Path) -> None:
    """Two streams that start in the same microsecond: the events go to the later stream id,
    as by definition, whichever order the rows come in."""
    async with db.pool.acquire() as conn:
        for stream in ("s-b", "s-a"):
            await add_event(conn, "online", CHANNEL, BASE, stream_id=stream)
        await add_samples(conn, CHANNEL, "s-a", BASE, [10, 20, 30])
    frames = [fact("cheer", n, 5 + n) for n in range(3)] + [fact("follow", 9, 20)]
    await store(db, tmp_path, frames)
    async with db.pool.acquire() as conn:
        counts = {
            r["stream_id"]: (r["cheers"], r["follows"])
            for r in await conn.fetch("SELECT stream_id, cheers, follows FROM stream_sessions")
        }
        assert counts == {"s-a": (0, 0), "s-b": (3, 1)}
        await assert_sessions_match_naive(conn, CHANNEL)
        await assert_events_match_naive(conn)
        await add_event(conn, "offline", CHANNEL, BASE + timedelta(minutes=10))
        await assert_sessions_match_naive(conn, CHANNEL)
