"""The write path under the failures of issue #10, at small scale: floods, kill -9, a full disk,
both sinks down, stop while wedged, gaps by Twitch's clock, a dead embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import OWNER_FILE, TEST_PREFIX
from test_events import EVENTS, frame_text
from test_store import count, cut, db_name, restore, spooled_items

from streamerhub.app import EVENTS as STORE_KEY
from streamerhub.app import _watchdog
from streamerhub.db import Database, EmbeddedPostgres, _pid_alive, create_pool, postmaster_pid
from streamerhub.events import history
from streamerhub.events.frames import parse_frame
from streamerhub.events.spool import SPOOL_FILE, Spool
from streamerhub.events.store import STALL_S, EventStore
from streamerhub.log import setup_logging

TESTS = Path(__file__).resolve().parent
DISK_FULL = "database or disk is full"


def cheer(i: int, stamp: str | None = None) -> Any:
    event = {**EVENTS["channel.cheer"][1], "bits": 1}
    extra = {"stamp": stamp} if stamp else {}
    return parse_frame(frame_text("channel.cheer", f"cheer-{i}", event, **extra))


class FullDisk:
    """A knob on a store's spool: while `full`, every write fails as SQLite does on ENOSPC."""

    def __init__(self, spool: Spool) -> None:
        self.full = False
        for name in ("_append", "_write", "_shrink"):
            real = getattr(spool, name)
            setattr(spool, name, self._guard(real))

    def _guard(self, real: Any) -> Any:
        def guarded(*args: Any) -> Any:
            if self.full:
                raise sqlite3.OperationalError(DISK_FULL)
            return real(*args)

        return guarded


def fast_store(db: Database, folder: Path, **kw: Any) -> EventStore:
    return EventStore(db, folder, retry_initial=0.05, retry_max=0.3, **kw)


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


# ----------------------------------------------------------------------------- bounded memory


async def test_a_flood_never_holds_more_than_the_window_in_memory(
    db: Database, tmp_path: Path
) -> None:
    async with fast_store(db, tmp_path, batch_size=250) as store:
        assert store.memory_window == 500
        worst = 0
        for i in range(12_000):  # submitted without a pause: the reader outruns any writer
            store.submit(cheer(i))
            worst = max(worst, store.status()["queued"])
        assert worst <= store.memory_window
        assert store.counters.overflows >= 1
        await asyncio.wait_for(store.drain(), 60)
    assert await count(db, "twitch_events") == 12_000
    assert (store.counters.stored, store.counters.duplicates) == (12_000, 0)


FLOOD_THEN_KILL = """
import asyncio, os, signal, sys
from streamerhub.db import Database, create_pool
from streamerhub.events.frames import parse_frame
from streamerhub.events.store import EventStore
from streamerhub.log import setup_logging
from test_events import frame_text

async def main(url, folder, n):
    setup_logging("warning", "json")
    db = Database(await create_pool(url, 2), url)
    store = EventStore(db, folder, batch_size=250)
    await store.start()
    frames = [parse_frame(frame_text("channel.cheer", f"cheer-{i}")) for i in range(n)]
    for frame in frames:  # the whole flood read off the socket...
        store.submit(frame)
    os.kill(os.getpid(), signal.SIGKILL)  # ...and the daemon dies before the writer ran once

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_kill_9_right_after_a_flood_loses_at_most_the_window(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    flood = 6_000
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOD_THEN_KILL, db_url, str(tmp_path), str(flood), env=env
    )
    try:
        assert await asyncio.wait_for(proc.wait(), 60) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    async with fast_store(db, tmp_path, batch_size=250) as store:
        await asyncio.wait_for(store.drain(), 60)
        window = store.memory_window
    stored = await count(db, "twitch_events")
    assert flood - window <= stored <= flood
    assert store.counters.duplicates == 0


# ----------------------------------------------------------------------------- no wedge


async def test_database_back_while_disk_full_goes_direct_then_spool_shrinks(
    db: Database, db_url: str, pg_cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    name = db_name(db_url)
    try:
        async with fast_store(db, tmp_path) as store:
            disk = FullDisk(store.spool)
            await cut(pg_cluster, name)
            for i in range(3000):
                store.submit(cheer(i))
            await store.flush()
            assert store.status()["mode"] == "spooling"
            spooled_size = store.spool.size()
            disk.full = True
            for i in range(3000, 3300):
                store.submit(cheer(i))
            await until(lambda: _is(store.mode == "wedged"), 10, "wedged")
            assert (await store.health())["at_risk"]
            await restore(pg_cluster, name)
            back = time.monotonic()
            # Back to direct writes although the spool can neither be written nor shrunk.
            await until(lambda: _is(store.mode == "direct"), 5, "direct while the disk is full")
            assert time.monotonic() - back < 5
            await asyncio.wait_for(store.drain(), 10)
            assert await count(db, "twitch_events") == 3300
            for i in range(3300, 3400):
                store.submit(cheer(i))
            await asyncio.wait_for(store.drain(), 10)
            assert await count(db, "twitch_events") == 3400
            assert (await store.health())["at_risk"] == []
            disk.full = False  # the disk returns: the replayed batches go, the file shrinks
            await until(lambda: _is(store.spool.size() < spooled_size / 4), 10, "spool file shrunk")
    finally:
        await restore(pg_cluster, name)
    assert await spooled_items(tmp_path) == 0
    assert store.counters.dropped == 0


async def _is(value: bool) -> bool:
    return value


async def test_stop_while_wedged_saves_to_the_database_once_it_answers(
    db: Database, db_url: str, pg_cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    name = db_name(db_url)
    try:
        store = fast_store(db, tmp_path)
        await store.start()
        disk = FullDisk(store.spool)
        disk.full = True
        await cut(pg_cluster, name)
        for i in range(1800):
            store.submit(cheer(i))
        await until(lambda: _is(store.mode == "wedged"), 10, "wedged")
        await restore(pg_cluster, name)
        await store.stop(timeout=10)  # SIGTERM while wedged: everything goes to the database
    finally:
        await restore(pg_cluster, name)
    assert await count(db, "twitch_events") == 1800
    assert store.counters.dropped == 0


async def test_stop_with_both_sinks_down_reports_exactly_what_was_lost(
    db: Database, db_url: str, pg_cluster: EmbeddedPostgres, tmp_path: Path, capfd: Any
) -> None:
    name = db_name(db_url)
    # The log goes to this test's stderr, not to a stream an earlier test left behind.
    setup_logging("info", "pretty")
    try:
        store = fast_store(db, tmp_path)
        await store.start()
        FullDisk(store.spool).full = True
        await cut(pg_cluster, name)
        for i in range(70):
            store.submit(cheer(i))
        await until(lambda: _is(store.mode == "wedged"), 10, "wedged")
        await store.stop(timeout=1)
    finally:
        await restore(pg_cluster, name)
    assert store.counters.dropped == 70
    captured = capfd.readouterr()
    out = captured.out + captured.err
    assert "store_stop_lost" in out and "items=70" in out and "cheer-49" in out


# ----------------------------------------------------------------------------- gaps


async def test_gap_after_a_crash_starts_at_twitchs_timestamp_not_the_replay_time(
    db: Database, db_url: str, pg_cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The 0.43 s vs 12.1 s bug: events spooled during an outage, replayed later, must not
    move the channel's last sign of life to the replay time."""
    name = db_name(db_url)
    sent = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=12)
    try:
        async with fast_store(db, tmp_path) as store:
            await cut(pg_cluster, name)
            for i in range(20):
                store.submit(cheer(i, (sent + dt.timedelta(milliseconds=i)).isoformat()))
            await store.flush()
            await restore(pg_cluster, name)
            await asyncio.wait_for(store.drain(), 10)
    finally:
        await restore(pg_cluster, name)
    channel = json.loads(frame_text("channel.cheer"))["payload"]["event"]["broadcaster_user_id"]
    last = await history.last_received(db, channel)
    assert last == sent + dt.timedelta(milliseconds=19)


# ----------------------------------------------------------------------------- supervised PG


async def test_a_killed_embedded_postgres_is_restarted_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    # Outside pytest's basetemp, which a parallel pytest run may reset to 0700 (see pg_cluster).
    folder = Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}own-"))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    cluster = EmbeddedPostgres(folder)
    await cluster.start()
    await cluster.create_database()
    db = Database(await create_pool(cluster.url, 2), cluster.url)
    watch = asyncio.create_task(db.supervise(cluster, every=0.2))
    await db.upgrade()
    try:
        async with fast_store(db, tmp_path) as store:
            for i in range(100):
                store.submit(cheer(i))
            await store.drain()
            pid = postmaster_pid(cluster.pgdata)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            for i in range(100, 300):
                store.submit(cheer(i))
                await asyncio.sleep(0.005)
            await until(lambda: _is(db.state.restarts == 1), 30, "postmaster restarted")
            await asyncio.wait_for(store.drain(), 30)
            assert store.mode == "direct" and db.state.up
        assert await count(db, "twitch_events") == 300
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        db.pool.terminate()
        await cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_daemon_restarts_its_postgres_and_healthz_tells(daemon_factory: Any) -> None:
    daemon = daemon_factory().start()
    assert daemon.wait_healthy()["database"]["restarts"] == 0
    pid = postmaster_pid(daemon.data_dir / "postgres")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    seen_503 = False
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(daemon.url + "/healthz", timeout=3) as resp:
                body = json.loads(resp.read())
            if body["database"]["restarts"] == 1 and body["store"]["mode"] == "direct":
                break
        except urllib.error.HTTPError as exc:
            text = exc.read()
            assert exc.code == 503, f"{exc.code} {text!r}:\n{daemon.log()[-4000:]}"
            body = json.loads(text)
            assert exc.code == 503 and body["status"] == "at_risk" and body["problems"]
            seen_503 = True
        time.sleep(0.1)
    else:
        pytest.fail(f"postgres not restarted:\n{daemon.log()}")
    assert body["status"] == "ok" and body["database"]["ok"]
    assert body["store"]["mode"] == "direct"
    new_pid = postmaster_pid(daemon.data_dir / "postgres")
    assert new_pid != pid and new_pid is not None and _pid_alive(new_pid)
    assert "embedded_postgres_restarted" in daemon.log()
    del seen_503  # a restart faster than our polling may never show the 503: not asserted


# ----------------------------------------------------------------------------- watchdog


class _Writer:
    def __init__(self, mode: str, stalled: float) -> None:
        self.mode, self.stalled = mode, stalled

    def stalled_for(self) -> float:
        return self.stalled


@pytest.mark.parametrize(
    ("mode", "stalled", "pinged"),
    [("direct", 0.0, True), ("direct", STALL_S + 1, False), ("wedged", STALL_S + 1, True)],
)
async def test_watchdog_is_withheld_from_a_hung_writer(
    mode: str, stalled: float, pinged: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}notify-"))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(str(folder / "notify"))
            listener.setblocking(False)
            monkeypatch.setenv("NOTIFY_SOCKET", str(folder / "notify"))
            app = web.Application()
            app[STORE_KEY] = _Writer(mode, stalled)  # type: ignore[assignment, misc]  # a stand-in writer
            task = asyncio.create_task(_watchdog(app, 0.05))
            await asyncio.sleep(0.2)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            got = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    got.append(listener.recv(100))
        assert (b"WATCHDOG=1" in got) is pinged
    finally:
        shutil.rmtree(folder, ignore_errors=True)
