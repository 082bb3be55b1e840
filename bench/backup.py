#!/usr/bin/env python3
"""Backup figures: time and size of a verified backup and of a restore onto a fresh data dir,
and the capture latency (p99 submit → commit) while backups run.

Prints one JSON object: {"events", "populate_s", "db_size_bytes", "backup_s", "backup_bytes",
"backup_rows", "restore_s", "restored_rows", "capture_rate", "capture_seconds",
"p50_commit_ms_idle", "p99_commit_ms_idle", "p50_commit_ms_during_backup",
"p99_commit_ms_during_backup", "backups_during_capture", "lost", "load_average"}.

A fresh embedded PostgreSQL in a temp dir gets --events events of a busy channel's mix through
the real EventStore (--events 10000000 is the issue's full history; expect about an hour to
populate on 2 cores). `backup_s` includes the verification (restore into a scratch database
and row counts). The capture phase submits --rate events/s for --seconds, once with nothing
else running and once while backups are taken back to back; latency runs from `submit` to the
commit that stored the event. Target: p99_commit_ms_during_backup ≤ 250.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_store import frames

from streamerhub.backup.restore import restore_backup
from streamerhub.backup.service import BackupService
from streamerhub.config import load_settings
from streamerhub.db import Database, EmbeddedPostgres, create_pool
from streamerhub.events.frames import parse_frame
from streamerhub.events.store import EventStore
from streamerhub.log import setup_logging


def settings_for(folder: Path) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.toml"
    config.write_text("")
    return load_settings(config, data_dir=str(folder / "data"), env={})


async def populate(db: Database, spool: Path, count: int) -> float:
    began = time.perf_counter()
    async with EventStore(db, spool) as store:
        for start in range(0, count, 20_000):
            for text in frames(min(20_000, count - start), start):
                store.submit(parse_frame(text))
            await store.drain()
    return time.perf_counter() - began


async def capture(
    db: Database, spool: Path, rate: int, seconds: float, backups: BackupService | None
) -> dict[str, Any]:
    """Submit `rate` events/s; latency of each from submit to the commit that stored it."""
    submitted: list[float] = []
    latencies: list[float] = []
    store: EventStore

    def committed(_wakeup: dict[str, Any]) -> None:
        now = time.perf_counter()
        done = store.counters.stored  # commits are in submit order
        latencies.extend((now - t) * 1000 for t in submitted[len(latencies) : done])

    taken = 0

    async def keep_backing_up() -> None:
        nonlocal taken
        assert backups is not None
        while True:
            await backups.take("manual")
            taken += 1

    texts = frames(int(rate * seconds), 10_000_000 + (1_000_000 if backups else 0))
    store = EventStore(db, spool, committed)
    await store.start()
    runner = asyncio.create_task(keep_backing_up()) if backups else None
    try:
        if backups:
            await asyncio.sleep(1.0)  # the dump is under way before capture is measured
        began = time.perf_counter()
        per_tick = max(1, rate // 50)
        for n in range(0, len(texts), per_tick):
            for text in texts[n : n + per_tick]:
                submitted.append(time.perf_counter())
                store.submit(parse_frame(text))
            lag = began + (n + per_tick) / rate - time.perf_counter()
            await asyncio.sleep(max(0.0, lag))
        await store.drain()
    finally:
        await store.stop()
        if runner:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    latencies.sort()
    return {
        "p50": round(statistics.median(latencies), 1),
        "p99": round(latencies[int(len(latencies) * 0.99) - 1], 1),
        "lost": len(texts) - store.counters.stored,
        "backups": taken,
    }


async def main(events: int, rate: int, seconds: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="streamerhub-bench-backup-"))
    os.chmod(work, 0o755)  # the embedded server's own user must reach it when run as root
    source = settings_for(work / "source")
    cluster = EmbeddedPostgres(source.data_dir)
    await cluster.start()
    restored_cluster = None
    try:
        await cluster.create_database()
        db = Database(await create_pool(cluster.url, 10), cluster.url)
        await db.upgrade()
        populate_s = await populate(db, work / "spool", events)
        db_size = int(await db.pool.fetchval("SELECT pg_database_size(current_database())"))
        backups = BackupService(source, db, embedded=True)

        began = time.perf_counter()
        backup = await backups.take("manual")
        backup_s = time.perf_counter() - began

        target = settings_for(work / "target")
        began = time.perf_counter()
        restored = await restore_backup(target, backup.path)
        restore_s = time.perf_counter() - began
        restored_cluster = EmbeddedPostgres(target.data_dir)

        idle = await capture(db, work / "spool-idle", rate, seconds, None)
        during = await capture(db, work / "spool-busy", rate, seconds, backups)
        await db.close()
    finally:
        await cluster.stop()
        if restored_cluster is not None:
            await restored_cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "events": events,
        "populate_s": round(populate_s, 1),
        "db_size_bytes": db_size,
        "backup_s": round(backup_s, 2),
        "backup_bytes": backup.size,
        "backup_rows": backup.total_rows,
        "restore_s": round(restore_s, 2),
        "restored_rows": sum(restored.rows.values()),
        "capture_rate": rate,
        "capture_seconds": seconds,
        "p50_commit_ms_idle": idle["p50"],
        "p99_commit_ms_idle": idle["p99"],
        "p50_commit_ms_during_backup": during["p50"],
        "p99_commit_ms_during_backup": during["p99"],
        "backups_during_capture": during["backups"],
        "lost": idle["lost"] + during["lost"],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=500, help="events/s during the capture phase")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    setup_logging("warning", "json")
    print(json.dumps(asyncio.run(main(args.events, args.rate, args.seconds))))
