"""Rollups kept by PostgreSQL equal naive queries over the raw rows, whatever the write order."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from analytics_data import (
    COUNTERS,
    add_event,
    add_samples,
    naive_event_buckets,
    naive_event_totals,
    naive_sessions,
    naive_spans,
    naive_viewers,
    raw_samples,
    rollup_event_buckets,
    z,
)

from streamerhub.db import Database

LEVELS = (900, 3600, 86400)
KINDS = (
    ["follow"] * 5 + ["sub"] * 2 + ["resub", "gift", "end", "cheer", "cheer", "raid_in", "raid_out"]
)


async def assert_events_match_naive(conn) -> None:
    for res in LEVELS:
        assert await rollup_event_buckets(conn, res) == await naive_event_buckets(conn, res), res


async def assert_sessions_match_naive(conn, channel: str) -> None:
    expected = await naive_sessions(conn, channel)
    rows = {
        r["stream_id"]: r
        for r in await conn.fetch("SELECT * FROM stream_sessions WHERE channel_id = $1", channel)
    }
    assert sorted(rows) == sorted(s["stream_id"] for s in expected)
    for s in expected:
        row = rows[s["stream_id"]]
        assert (row["started_at"], row["ended_at"]) == (s["started_at"], s["ended_at"]), s
        hi = min(
            [t for t in (s["ended_at"], s["next"]) if t],
            default=datetime.max.replace(tzinfo=s["started_at"].tzinfo),
        )
        counts = await naive_event_totals(conn, channel, s["started_at"], hi)
        assert {c: row[c] for c in COUNTERS} == counts, s["stream_id"]


async def insert_many(conn, kind: str, rows: list[tuple[str, str, datetime]]) -> None:
    """Several events in one statement per table, as the store writes a batch."""
    await conn.execute(
        "INSERT INTO twitch_events (message_id, subscription_type, subscription_version, channel_id, "
        "occurred_at, payload) SELECT m, 'channel.follow', '2', c, a, '{}' "
        "FROM unnest($1::text[], $2::text[], $3::timestamptz[]) u(m, c, a) ON CONFLICT DO NOTHING",
        *map(list, zip(*rows)),
    )
    if kind == "follow":
        await conn.execute(
            "INSERT INTO twitch_follows SELECT m, c, m, m, m, a FROM unnest($1::text[], $2::text[], "
            "$3::timestamptz[]) u(m, c, a) ON CONFLICT DO NOTHING",
            *map(list, zip(*rows)),
        )
    else:
        await conn.execute(
            "INSERT INTO twitch_cheers (message_id, channel_id, bits, occurred_at) SELECT m, c, 7, a "
            "FROM unnest($1::text[], $2::text[], $3::timestamptz[]) u(m, c, a) ON CONFLICT DO NOTHING",
            *map(list, zip(*rows)),
        )


async def test_rollups_equal_naive_after_random_duplicate_late_and_deleted_events(
    db: Database,
) -> None:
    rng = random.Random(20260329)
    base = z("2026-03-27T20:00Z")
    async with db.pool.acquire() as conn:
        await add_event(conn, "online", "c1", base + timedelta(hours=2), stream_id="s1")
        await add_event(conn, "offline", "c1", base + timedelta(hours=7, minutes=13))
        await add_event(conn, "online", "c1", base + timedelta(hours=30), stream_id="s2")
        plan = [
            (
                rng.choice(KINDS),
                rng.choice(["c1", "c1", "c2"]),
                base + timedelta(seconds=rng.randrange(0, 3 * 86400)),
            )
            for _ in range(400)
        ]
        ids = []
        for kind, channel, at in plan:  # arrival order is random: late events abound
            ids.append(
                await add_event(
                    conn,
                    kind,
                    channel,
                    at,
                    bits=rng.randrange(1, 500),
                    total=rng.choice([1, 5, 50]),
                    is_gift=rng.random() < 0.2,
                    viewers=rng.randrange(1, 300),
                )
            )
        for mid, (kind, channel, at) in rng.sample(list(zip(ids, plan)), 40):  # redelivered
            await add_event(conn, kind, channel, at, message_id=mid)
        await insert_many(
            conn, "follow", [(f"b{i}", "c1", base + timedelta(minutes=17 * i)) for i in range(60)]
        )
        await insert_many(
            conn, "cheer", [(f"b{i}", "c1", base) for i in range(30)]
        )  # all duplicates
        await conn.execute(
            "DELETE FROM twitch_events WHERE message_id = ANY($1)", rng.sample(ids, 25)
        )
        await conn.execute("UPDATE twitch_cheers SET bits = bits + 1000")
        await conn.execute(
            "UPDATE twitch_follows SET followed_at = followed_at - interval '5 hours' "
            "WHERE message_id LIKE 'b%'"
        )
        await assert_events_match_naive(conn)
        await assert_sessions_match_naive(conn, "c1")
        before = await rollup_event_buckets(conn, 900)
        await conn.execute("SELECT analytics_rebuild()")
        assert await rollup_event_buckets(conn, 900) == before
        await assert_sessions_match_naive(conn, "c1")


async def test_bulk_statements_resync_instead_of_carrying_every_row(db: Database) -> None:
    base = z("2026-01-01T00:00Z")
    rows = [(f"bulk{i}", "c1", base + timedelta(seconds=37 * i)) for i in range(12_000)]
    async with db.pool.acquire() as conn:
        await add_event(conn, "online", "c1", base + timedelta(hours=20), stream_id="s1")
        await insert_many(conn, "follow", rows)
        await assert_events_match_naive(conn)
        assert (
            await conn.fetchval("SELECT sum(follows) FROM analytics_event_rollup WHERE res = 86400")
            == 12_000
        )
        await assert_sessions_match_naive(conn, "c1")
        await conn.execute("DELETE FROM twitch_follows")  # store.rebuild_typed does this
        assert (
            await conn.fetchval("SELECT coalesce(sum(follows), 0) FROM analytics_event_rollup") == 0
        )
        assert await conn.fetchval("SELECT follows FROM stream_sessions") == 0


async def test_sessions_settle_whatever_order_online_offline_and_events_arrive(
    db: Database,
) -> None:
    async with db.pool.acquire() as conn:
        # Stream A: its offline arrives before its online (replayed spool), events in between.
        await add_event(conn, "follow", "c1", z("2026-03-28T21:10Z"))
        await add_event(conn, "offline", "c1", z("2026-03-28T23:30Z"))
        await add_event(conn, "online", "c1", z("2026-03-28T21:00Z"), stream_id="A")
        await add_event(conn, "cheer", "c1", z("2026-03-28T23:45Z"), bits=999)  # after the end
        # Stream B never sends offline; C starts the next day and ends it.
        await add_event(conn, "online", "c1", z("2026-03-29T20:00Z"), stream_id="B")
        await add_samples(conn, "c1", "B", z("2026-03-29T20:01Z"), [10, 20, 30])
        await add_event(conn, "sub", "c1", z("2026-03-29T20:02Z"))
        await add_event(conn, "online", "c1", z("2026-03-30T20:00Z"), stream_id="C")
        await add_event(conn, "sub", "c1", z("2026-03-30T20:05Z"))
        # A late follow inside A, and a late offline for C with an event after it.
        await add_event(conn, "follow", "c1", z("2026-03-28T22:00Z"))
        await add_event(conn, "follow", "c1", z("2026-03-30T23:00Z"))
        await add_event(conn, "offline", "c1", z("2026-03-30T22:00Z"))
        await assert_sessions_match_naive(conn, "c1")
        rows = {r["stream_id"]: r for r in await conn.fetch("SELECT * FROM stream_sessions")}
        assert rows["A"]["follows"] == 2 and rows["A"]["bits"] == 0
        assert rows["B"]["end_source"] == "next_stream"
        assert rows["B"]["ended_at"] == z("2026-03-29T20:04:30Z")  # last sample + 90 s
        assert rows["C"]["follows"] == 0 and rows["C"]["end_source"] == "offline"


async def test_viewer_rollups_equal_naive_after_out_of_order_samples(db: Database) -> None:
    rng = random.Random(7)
    start = z("2026-03-28T21:47Z")
    async with db.pool.acquire() as conn:
        await add_event(conn, "online", "c1", start - timedelta(seconds=50), stream_id="s1")
        times = [
            start + timedelta(seconds=60 * i + rng.randrange(0, 20))
            for i in range(180)
            if rng.random() > 0.08
        ]  # some polls missed
        rows = [("c1", "s1", t, rng.randrange(0, 5000), 90) for t in times]
        rng.shuffle(rows)  # arrival order scrambled
        for i in range(0, len(rows), 7):
            await conn.executemany(
                "INSERT INTO viewer_samples (channel_id, stream_id, sampled_at, "
                "viewer_count, max_span_s) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT DO NOTHING",
                rows[i : i + 7] + rows[:2],
            )
        await conn.execute("DELETE FROM viewer_samples WHERE sampled_at = $1", times[50])
        await conn.execute(
            "UPDATE viewer_samples SET viewer_count = viewer_count + 1 WHERE sampled_at = $1",
            times[60],
        )
        await add_event(conn, "offline", "c1", times[-1] + timedelta(seconds=40))
        samples = await raw_samples(conn, "c1")
        spans = naive_spans(samples, await naive_sessions(conn, "c1"))
        assert {s["sampled_at"]: s["span_s"] for s in samples} == spans
        assert spans[times[-1]] == 40  # capped by the offline
        for res in LEVELS:
            got = {
                r["bucket"]: dict(r)
                for r in await conn.fetch(
                    "SELECT bucket, viewer_s, live_s, peak, samples FROM analytics_viewer_rollup "
                    "WHERE res = $1",
                    res,
                )
            }
            step = timedelta(seconds=res)
            for bucket, row in got.items():
                row.pop("bucket")
                assert row == naive_viewers(samples, spans, bucket, bucket + step), (res, bucket)
            whole = naive_viewers(samples, spans, z("2026-01-01T00:00Z"), z("2027-01-01T00:00Z"))
            assert sum(r["viewer_s"] for r in got.values()) == whole["viewer_s"]
        session = await conn.fetchrow("SELECT * FROM stream_sessions WHERE stream_id = 's1'")
        assert session["viewer_s"] == whole["viewer_s"] and session["peak_viewers"] == whole["peak"]
        gaps = await conn.fetch("SELECT started_at, ended_at FROM viewer_sample_gaps ORDER BY 1")
        expected = [
            (a["sampled_at"] + timedelta(seconds=90), b["sampled_at"])
            for a, b in zip(samples, samples[1:])
            if (b["sampled_at"] - a["sampled_at"]).total_seconds() > 90
        ]
        assert [(g["started_at"], g["ended_at"]) for g in gaps] == expected and expected


async def test_totals_statements_call_the_raw_edge_readers_without_inlining_them(
    db: Database,
) -> None:
    """Inlined, the raw readers put each type's fact expression into every totals statement: 1 to
    4.5 ms to plan a run of under 1 ms, and a plan PostgreSQL kept or re-made depending on the
    table sizes (the same card cost 0.6 ms on one history and 4 ms on a larger one)."""
    from streamerhub.analytics.rollups import ACTIVITY_TOTALS, EVENT_TOTALS, UNIQUE_CHATTERS

    lo, hi = z("2026-03-01T10:00:05Z"), z("2026-03-01T10:00:50Z")
    pieces = ([0], [0], [lo], [hi])
    async with db.pool.acquire() as conn:
        for sql, reader in (
            (EVENT_TOTALS, "analytics_raw_events"),
            (ACTIVITY_TOTALS, "analytics_raw_activity"),
            (UNIQUE_CHATTERS, "analytics_raw_activity"),
        ):
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, "c1", *pieces))
            assert f"Function Scan on {reader}" in plan, plan
            assert "twitch_events" not in plan and "twitch_follows" not in plan, plan
