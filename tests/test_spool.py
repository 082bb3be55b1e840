"""The disk spool: batches survive a restart, come back in order, hours of outage fit."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from streamerhub.events.spool import SPOOL_FILE, Spool


async def opened(folder: Path) -> Spool:
    spool = Spool(folder / SPOOL_FILE)
    await spool.open()
    return spool


async def test_batches_come_back_in_order_after_a_restart(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    for n in range(5):
        await spool.append([{"n": n, "i": i} for i in range(3)])
    await spool.close()  # a new process opening the same file

    again = Spool(tmp_path / SPOOL_FILE)
    stats = await again.open()
    assert (stats.batches, stats.items) == (5, 15)
    assert stats.oldest_at is not None and stats.oldest_at <= time.time()
    batches = await again.read(max_items=7)
    assert [b.items[0]["n"] for b in batches] == [0, 1]  # whole batches, at most 7 items
    await again.delete_through(batches[-1].id)
    rest = await again.read(max_items=100)
    assert [b.items[0]["n"] for b in rest] == [2, 3, 4]
    assert [item["i"] for item in rest[0].items] == [0, 1, 2]
    await again.close()


async def test_an_oversized_batch_is_still_read(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    await spool.append(list(range(50)))
    assert [len(b.items) for b in await spool.read(max_items=10)] == [50]
    await spool.close()


async def test_empty_after_replay_and_close_is_idempotent(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    await spool.append(["a"])
    await spool.delete_through((await spool.read(10))[-1].id)
    assert await spool.read(10) == []
    assert (await spool.stats()).items == 0
    await spool.close()
    await spool.close()


async def test_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    await spool.append(["x"])
    conn = sqlite3.connect(tmp_path / SPOOL_FILE)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 1
    finally:
        conn.close()
    assert (
        await asyncio.to_thread(
            spool._call, lambda: spool._db().execute("PRAGMA synchronous").fetchone()[0]
        )
        == 2
    )  # FULL
    await spool.close()


async def test_hundred_thousand_items_quickly_without_blocking_the_loop(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    event = {"message_id": "x" * 36, "payload": {"event": {"user_name": "Viewer", "bits": 100}}}
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    beat = asyncio.create_task(ticker())
    started = time.monotonic()
    for _ in range(200):  # 200 batches of 500: a long outage at a busy channel's rate
        await spool.append([event] * 500)
    appended = time.monotonic() - started
    beat.cancel()
    assert (await spool.stats()).items == 100_000
    assert appended < 20
    assert ticks > 50  # the loop kept running while sqlite wrote and fsync'd

    replayed, last = 0, 0
    while batches := await spool.read(max_items=5000, after=last):
        replayed += sum(len(b.items) for b in batches)
        last = batches[-1].id
    await spool.delete_through(last)
    assert replayed == 100_000 and (await spool.stats()).items == 0
    await spool.close()
