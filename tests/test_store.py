"""The write path against a real PostgreSQL: typed rows, dedupe, dead letters, outages, crashes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import asyncpg
import pytest
from test_events import EVENTS, frame_text

from streamerhub.db import Database, EmbeddedPostgres
from streamerhub.events.batch import rebuild_typed
from streamerhub.events.frames import parse_frame
from streamerhub.events.spool import SPOOL_FILE, Spool
from streamerhub.events.store import EventStore
from streamerhub.events.typed import TYPED_TABLES
from streamerhub.pubsub import Topic


async def spooled_items(data_dir: Path) -> int:
    """Items left in the spool file of `data_dir`, read with a spool that is closed again."""
    spool = Spool(data_dir / SPOOL_FILE)
    try:
        return (await spool.open()).items
    finally:
        await spool.close()


TESTS = Path(__file__).resolve().parent


def cheer(i: int, bits: int = 100) -> Any:
    event = {**EVENTS["channel.cheer"][1], "bits": bits}
    return parse_frame(frame_text("channel.cheer", f"cheer-{i}", event))


async def fetch(db: Database, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with db.pool.acquire() as conn:
        return await conn.fetch(sql, *args)


async def count(db: Database, table: str) -> int:
    return (await fetch(db, f"SELECT count(*) FROM {table}"))[0][0]


def make_store(db: Database, folder: Path, published: list[dict] | None = None) -> EventStore:
    publish = published.append if published is not None else None
    return EventStore(db, folder, publish, retry_initial=0.05, retry_max=0.3)


@pytest.fixture
async def store(db: Database, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with make_store(db, tmp_path) as running:
        yield running


# ----------------------------------------------------------------------------- typed rows


async def test_every_type_lands_in_its_typed_table(store: EventStore, db: Database) -> None:
    for n, sub_type in enumerate(EVENTS):
        store.submit(parse_frame(frame_text(sub_type, f"m-{n}")))
    await store.drain()
    assert await count(db, "twitch_events") == len(EVENTS)
    gift = (await fetch(db, "SELECT * FROM twitch_subscriptions WHERE kind = 'gift'"))[0]
    assert (gift["user_id"], gift["is_anonymous"], gift["gift_total"]) == (None, True, 5)
    resub = (await fetch(db, "SELECT * FROM twitch_subscriptions WHERE kind = 'resub'"))[0]
    assert (resub["message"], resub["cumulative_months"]) == ("15 months, still here!", 15)
    raid = (await fetch(db, "SELECT * FROM twitch_raids"))[0]
    assert (raid["channel_id"], raid["from_user_login"], raid["viewers"]) == ("1337", "raider", 420)
    trains = await fetch(
        db, "SELECT phase, train_type, level FROM twitch_hype_trains ORDER BY phase"
    )
    assert [tuple(r) for r in trains] == [
        ("begin", "golden_kappa", 1),
        ("end", "golden_kappa", 2),
        ("progress", "golden_kappa", 2),
    ]
    follow = (await fetch(db, "SELECT * FROM twitch_follows"))[0]
    assert (follow["user_name"], follow["followed_at"].isoformat()) == (
        "Cool_Viewer",
        "2026-03-01T20:15:41.987654+00:00",
    )
    labels = await fetch(db, "SELECT content_classification_labels FROM twitch_channel_updates")
    assert labels[0][0] == ["ProfanityVulgarity"]
    per_table = {t: await count(db, t) for t in TYPED_TABLES}
    assert per_table["twitch_subscriptions"] == 4 and per_table["twitch_predictions"] == 4
    assert sum(per_table.values()) == len(EVENTS)


async def test_typed_tables_rebuild_from_raw_rows(store: EventStore, db: Database) -> None:
    for n, sub_type in enumerate(EVENTS):
        store.submit(parse_frame(frame_text(sub_type, f"m-{n}")))
    await store.drain()
    before = {
        t: sorted(map(dict, await fetch(db, f"SELECT * FROM {t}")), key=str) for t in TYPED_TABLES
    }
    assert await rebuild_typed(db) == (len(EVENTS), 0)
    after = {
        t: sorted(map(dict, await fetch(db, f"SELECT * FROM {t}")), key=str) for t in TYPED_TABLES
    }
    assert after == before


async def test_unknown_type_lands_raw_only(store: EventStore, db: Database) -> None:
    event = {"broadcaster_user_id": "1337", "duration_seconds": 90, "is_automatic": True}
    store.submit(parse_frame(frame_text("channel.future.thing", "ad-1", event)))
    await store.drain()
    raw = await fetch(db, "SELECT subscription_type, channel_id, payload FROM twitch_events")
    assert [(r[0], r[1]) for r in raw] == [("channel.future.thing", "1337")]
    assert raw[0]["payload"]["event"]["duration_seconds"] == 90
    assert sum([await count(db, t) for t in TYPED_TABLES]) == 0


# ----------------------------------------------------------------------------- dedupe


async def test_duplicate_message_id_is_stored_once(store: EventStore, db: Database) -> None:
    for _ in range(3):
        store.submit(cheer(1))  # redelivered within one batch
    await store.drain()
    store.submit(cheer(1))  # and again later
    await store.drain()
    assert await count(db, "twitch_events") == 1 and await count(db, "twitch_cheers") == 1
    assert (store.counters.stored, store.counters.duplicates) == (1, 3)


@pytest.mark.parametrize(
    "sub_type",
    ["channel.channel_points_custom_reward_redemption.add", "stream.online", "channel.follow"],
)
async def test_same_occurrence_under_two_message_ids_is_stored_once(
    store: EventStore, db: Database, sub_type: str
) -> None:
    store.submit(parse_frame(frame_text(sub_type, "live-session")))
    store.submit(parse_frame(frame_text(sub_type, "stale-session")))
    await store.drain()
    assert await count(db, "twitch_events") == 1
    assert sum([await count(db, t) for t in TYPED_TABLES]) == 1


async def test_backfilled_follow_dedupes_against_the_live_one(
    store: EventStore, db: Database
) -> None:
    store.submit(parse_frame(frame_text("channel.follow", "live")))
    await store.drain()
    helix_follow = {**EVENTS["channel.follow"][1], "followed_at": "2026-03-01T20:15:41Z"}
    store.submit_backfill(
        "backfill:follow:1",
        "channel.follow",
        "2",
        "2026-03-01T20:15:41Z",
        {"subscription": {}, "event": helix_follow},
    )
    store.submit_backfill(
        "backfill:follow:2",
        "channel.follow",
        "2",
        "2026-03-01T21:00:00Z",
        {
            "subscription": {},
            "event": {**helix_follow, "user_id": "77", "followed_at": "2026-03-01T21:00:00Z"},
        },
    )
    await store.drain()
    rows = await fetch(db, "SELECT message_id, backfilled FROM twitch_follows ORDER BY followed_at")
    assert [tuple(r) for r in rows] == [("live", False), ("backfill:follow:2", True)]


async def test_progress_updates_sharing_an_id_are_all_kept(store: EventStore, db: Database) -> None:
    for n in range(3):
        store.submit(parse_frame(frame_text("channel.poll.progress", f"p-{n}")))
        store.submit(
            parse_frame(
                frame_text("channel.channel_points_custom_reward_redemption.update", f"u-{n}")
            )
        )
    await store.drain()
    assert await count(db, "twitch_polls") == 3 and await count(db, "twitch_redemptions") == 3


async def test_five_thousand_events_stored_exactly_once(store: EventStore, db: Database) -> None:
    for i in range(5000):
        store.submit(cheer(i, bits=i + 1))
    for i in range(0, 5000, 2):
        store.submit(cheer(i, bits=i + 1))  # half of them delivered twice
    await store.drain()
    assert await count(db, "twitch_events") == 5000
    total = (await fetch(db, "SELECT count(*), sum(bits) FROM twitch_cheers"))[0]
    assert tuple(total) == (5000, 5000 * 5001 // 2)
    assert (store.counters.stored, store.counters.duplicates) == (5000, 2500)
    assert store.counters.batches >= 4  # batched (2,000 at most), not one transaction


# ----------------------------------------------------------------------------- dead letters


async def test_bad_frames_and_events_become_dead_letters(store: EventStore, db: Database) -> None:
    store.dead_letter("eventsub", "not JSON: Expecting value", "{garbage")
    no_user = {k: v for k, v in EVENTS["channel.follow"][1].items() if k != "user_id"}
    text = frame_text("channel.follow", "bad-follow", no_user)
    store.submit(parse_frame(text))
    store.submit(42)  # type: ignore[arg-type]  # a caller bug must not kill the reader
    await store.drain()
    letters = await fetch(db, "SELECT source, reason, raw FROM dead_letters ORDER BY id")
    assert [(r["source"], r["reason"], r["raw"]) for r in letters[:2]] == [
        ("eventsub", "not JSON: Expecting value", "{garbage"),
        ("eventsub", "event.user_id missing", text),
    ]
    assert "cannot queue" in letters[2]["reason"]
    assert await count(db, "twitch_events") == 0
    assert store.counters.dead_letters == 3


async def test_a_row_postgres_rejects_is_dead_lettered_and_the_batch_survives(
    store: EventStore, db: Database
) -> None:
    for i in range(20):
        store.submit(cheer(i))
    poison = {**EVENTS["channel.cheer"][1], "message": "nul \u0000 byte"}
    store.submit(parse_frame(frame_text("channel.cheer", "poison", poison)))
    await store.drain()
    assert await count(db, "twitch_events") == 20
    letter = (await fetch(db, "SELECT source, reason, raw FROM dead_letters"))[0]
    assert letter["source"] == "store" and "database rejected" in letter["reason"]
    assert '"poison"' in letter["raw"] and "nul" in letter["raw"]


# ----------------------------------------------------------------------------- publish, gaps, stop


async def test_a_bare_wake_up_is_published_after_the_commit(db: Database, tmp_path: Path) -> None:
    topic: Topic[dict[str, Any]] = Topic()
    async with topic.subscribe() as feed, EventStore(db, tmp_path, topic) as store:
        store.submit(parse_frame(frame_text("channel.subscription.gift", "gift-1")))
        store.submit(parse_frame(frame_text("channel.subscription.gift", "gift-1")))
        await store.drain()
        item = await asyncio.wait_for(feed.get(), 2)
        assert feed.empty()  # the duplicate wakes nobody
    assert item == {}  # the feed reads the committed rows from the database
    assert await count(db, "twitch_events") == 1


async def test_nothing_is_announced_before_the_commit(db: Database, tmp_path: Path) -> None:
    published: list[dict] = []
    async with db.pool.acquire() as blocker, make_store(db, tmp_path, published) as store:
        store.commit_timeout = 10  # wait for the lock rather than spool
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE twitch_events IN EXCLUSIVE MODE")  # inserts wait
        store.submit(cheer(1))
        await asyncio.sleep(0.3)
        assert published == [] and store.status()["queued"] == 1
        await tx.rollback()
        await asyncio.wait_for(store.drain(), 5)
    assert published == [{}]


async def test_a_hanging_database_gets_the_batch_spooled(db: Database, tmp_path: Path) -> None:
    async with db.pool.acquire() as blocker, make_store(db, tmp_path) as store:
        store.commit_timeout = 0.2  # a live batch must not wait longer than this for the database
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE twitch_events IN EXCLUSIVE MODE")
        for i in range(50):
            store.submit(cheer(i))
        await asyncio.wait_for(store.flush(), 5)
        assert store.status()["spool_items"] == 50
        await tx.rollback()
        await asyncio.wait_for(store.drain(), 10)
        assert store.status()["spool_items"] == 0
    assert await count(db, "twitch_cheers") == 50


async def test_gaps_are_recorded_once(store: EventStore, db: Database) -> None:
    started = store.record_gap_start("1337", "keepalive timeout")
    store.record_gap_start("1337", "keepalive timeout", at=started)  # replayed twice
    store.record_gap_end("1337")
    await store.drain()
    gaps = await fetch(
        db, "SELECT started_at, ended_at, reason FROM eventsub_gaps WHERE channel_id = '1337'"
    )
    assert len(gaps) == 1 and gaps[0]["started_at"] == started
    assert gaps[0]["ended_at"] >= started and gaps[0]["reason"] == "keepalive timeout"


async def test_stop_flushes_what_is_queued_and_is_idempotent(db: Database, tmp_path: Path) -> None:
    store = make_store(db, tmp_path)
    await store.start()
    for i in range(300):
        store.submit(cheer(i))
    await asyncio.gather(store.stop(), store.stop())
    await store.stop()
    assert await count(db, "twitch_events") == 300


# ----------------------------------------------------------------------------- outages


def db_name(url: str) -> str:
    return url.split("?", 1)[0].rsplit("/", 1)[1]


async def admin(cluster: EmbeddedPostgres, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(
        host=str(cluster.socket_dir), user="streamerhub", database="postgres"
    )
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def cut(cluster: EmbeddedPostgres, name: str) -> None:
    """The database goes away: no new connections, every existing one killed."""
    await admin(cluster, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    await admin(
        cluster, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
    )


async def restore(cluster: EmbeddedPostgres, name: str) -> None:
    await admin(cluster, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_outage_mid_burst_spools_then_stores_everything_once(
    db: Database, db_url: str, pg_cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    published: list[dict] = []
    name = db_name(db_url)
    try:
        async with make_store(db, tmp_path, published) as store:
            for i in range(500):
                store.submit(cheer(i))
            await cut(pg_cluster, name)  # while the burst is being written
            for i in range(500, 1500):
                store.submit(cheer(i))
            for i in range(0, 1500, 10):
                store.submit(cheer(i))  # redeliveries, some of rows committed before the cut
            await store.flush()
            status = store.status()
            assert status["mode"] == "spooling" and status["spool_items"] >= 1000
            woken = len(published)
            await asyncio.sleep(0.2)
            assert len(published) == woken  # spooled batches wake nobody: nothing was committed
            await restore(pg_cluster, name)
            await asyncio.wait_for(store.drain(), 20)
            assert store.status()["spool_items"] == 0 and store.status()["mode"] == "direct"
            assert store.counters.replayed >= 1000
    finally:
        await restore(pg_cluster, name)
    assert await count(db, "twitch_events") == 1500 and await count(db, "twitch_cheers") == 1500
    assert len(published) > woken and set(map(len, published)) == {0}  # replays wake the feed
    assert await spooled_items(tmp_path) == 0
    # The live feed reads rows by received_at: replayed rows sort after those stored before.
    order = await fetch(
        db,
        "SELECT min(received_at) FILTER (WHERE n >= 500) >= "
        "max(received_at) FILTER (WHERE n < 500) FROM "
        "(SELECT received_at, split_part(message_id, '-', 2)::int AS n "
        "FROM twitch_events) e",
    )
    assert order[0][0] is True


async def test_thirty_second_outage_during_a_burst_loses_nothing(
    db: Database, db_url: str, pg_cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The daemon's own retry pacing (not the tests' fast one) through a 30 s outage."""
    name = db_name(db_url)
    try:
        async with EventStore(db, tmp_path) as store:
            for i in range(200):
                store.submit(cheer(i))
            await cut(pg_cluster, name)
            for second in range(30):  # events keep arriving all along
                for i in range(200 + second * 100, 300 + second * 100):
                    store.submit(cheer(i))
                await asyncio.sleep(1)
            assert store.status()["mode"] == "spooling"
            await restore(pg_cluster, name)
            await asyncio.wait_for(store.drain(), 30)
            assert store.status()["spool_items"] == 0
    finally:
        await restore(pg_cluster, name)
    assert await count(db, "twitch_events") == 3200 and await count(db, "twitch_cheers") == 3200


async def test_stopped_during_an_outage_replays_on_next_start(
    db: Database, db_url: str, pg_cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    name = db_name(db_url)
    try:
        async with make_store(db, tmp_path) as first:
            await cut(pg_cluster, name)
            for i in range(200):
                first.submit(cheer(i))
        assert first.status()["spool_items"] == 200  # stop spooled what it could not commit
    finally:
        await restore(pg_cluster, name)
    async with make_store(db, tmp_path) as second:
        await asyncio.wait_for(second.drain(), 20)
        assert second.counters.replayed == 200
    assert await count(db, "twitch_cheers") == 200


CRASHER = """
import asyncio, sys
from streamerhub.events.frames import parse_frame
from streamerhub.events.store import EventStore
from streamerhub.db import Database, create_pool
from streamerhub.log import setup_logging
from test_events import EVENTS, frame_text

async def main(url, folder):
    setup_logging("warning", "json")  # logs to stderr: stdout is the test's channel
    db = Database(await create_pool(url, 2), url)
    store = EventStore(db, folder, retry_initial=30, retry_max=30)
    await store.start()
    for i in range(100):
        store.submit(parse_frame(frame_text("channel.cheer", f"cheer-{i}")))
    await store.drain()
    print("committed", flush=True)
    await asyncio.to_thread(sys.stdin.readline)   # the test cuts the database now
    for i in range(50, 150):
        store.submit(parse_frame(frame_text("channel.cheer", f"cheer-{i}")))
    await store.flush()
    print("spooled", store.status()["spool_items"], flush=True)
    await asyncio.sleep(60)                       # until kill -9

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_spool_left_by_kill_9_is_replayed_on_start_without_duplicates(
    db: Database, db_url: str, pg_cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    name = db_name(db_url)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "STREAMERHUB_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHER,
        db_url,
        str(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdin and proc.stdout
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"committed\n"
        await cut(pg_cluster, name)
        proc.stdin.write(b"go\n")
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"spooled 100\n"
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await restore(pg_cluster, name)
    async with make_store(db, tmp_path) as store:
        await asyncio.wait_for(store.drain(), 20)
        assert (store.counters.replayed, store.counters.duplicates) == (100, 50)
    assert await count(db, "twitch_events") == 150 and await count(db, "twitch_cheers") == 150
    assert await spooled_items(tmp_path) == 0


async def test_database_server_stopped_and_started(tmp_path: Path) -> None:
    """Connection refused, not just a refused database: the server process itself is gone."""
    cluster = EmbeddedPostgres(tmp_path / "own")
    await cluster.start()
    try:
        await cluster.create_database()
        from streamerhub.db import create_pool

        db = Database(await create_pool(cluster.url, 2), cluster.url)
        await db.upgrade()
        try:
            async with make_store(db, tmp_path) as store:
                await cluster.stop()
                for i in range(300):
                    store.submit(cheer(i))
                await store.flush()
                assert store.status()["spool_items"] == 300
                await cluster.start()
                await asyncio.wait_for(store.drain(), 30)
            assert await count(db, "twitch_cheers") == 300
        finally:
            await db.close()
    finally:
        await cluster.stop()
        shutil.rmtree(cluster.pgdata.parent, ignore_errors=True)  # moved out of tmp_path as root
