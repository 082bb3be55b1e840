#!/usr/bin/env python3
"""Store-only ingest figures: events/s through EventStore (batched) vs one commit per event.

Prints one JSON object: {"events", "events_per_s", "naive_events", "naive_events_per_s",
"speedup", "batches", "last_commit_ms", "spool_append_per_frame_us", ...}. Both paths start from
the frame text (parse_frame + normalise, as the EventSub reader hands it over) and end when the
rows are committed, raw + typed, on a fresh embedded PostgreSQL in a temp dir. Targets:
events_per_s ≥ 5,000 and speedup ≥ 3 on a 2-core machine. Wall-clock figures follow whatever
else the machine runs (load_average is printed); cpu_us_per_event (this process, and every
PostgreSQL process) and cpu_bound_events_per_s do not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from streamerhub.db import Database, EmbeddedPostgres, create_pool, postmaster_pid
from streamerhub.events.batch import write_batch
from streamerhub.events.frames import parse_frame
from streamerhub.events.items import Entry
from streamerhub.events.normalise import normalise_frame
from streamerhub.events.store import EventStore
from streamerhub.fake_twitch import SUBSCRIPTION_TYPES, sample_event

# A busy channel's mix per 100 events; stream.online/offline and channel.update are a few a day.
MIX = {
    "channel.follow": 24,
    "channel.subscribe": 10,
    "channel.subscription.gift": 3,
    "channel.subscription.message": 8,
    "channel.subscription.end": 2,
    "channel.cheer": 15,
    "channel.channel_points_custom_reward_redemption.add": 12,
    "channel.channel_points_custom_reward_redemption.update": 5,
    "channel.raid": 1,
    "channel.hype_train.progress": 5,
    "channel.poll.progress": 5,
    "channel.prediction.progress": 5,
    "channel.goal.progress": 5,
}
RARE = [
    "channel.hype_train.begin",
    "channel.hype_train.end",
    "channel.poll.begin",
    "channel.poll.end",
    "channel.prediction.begin",
    "channel.prediction.lock",
    "channel.prediction.end",
    "channel.goal.begin",
    "channel.goal.end",
    "channel.update",
    "stream.online",
    "stream.offline",
]


def mix(count: int, start: int) -> list[str]:
    """Types for events start..start+count: MIX, plus each RARE type once per 2,000 events."""
    cycle = [t for t, n in MIX.items() for _ in range(n)]
    return [
        RARE[(i // 2000) % len(RARE)] if i % 2000 == 1999 else cycle[i % len(cycle)]
        for i in range(start, start + count)
    ]


def frames(count: int, start: int = 0) -> list[str]:
    """Notification frames as they arrive on the socket, fresh message ids and event ids."""
    rows = {row.type: row for row in SUBSCRIPTION_TYPES}
    out = []
    for i, sub_type in zip(range(start, start + count), mix(count, start)):
        row = rows[sub_type]
        # Distinct occurrences: the same follower in the same second, or the same stream id,
        # would rightly be deduplicated by the event key.
        unique = {"channel.follow": {"user_id": f"u{i}"}, "stream.online": {"id": f"s{i}"}}
        version, event = sample_event(row.type, **unique.get(row.type, {}))
        condition = {
            key: event.get("broadcaster_user_id") or event.get(key) for key in row.condition
        }
        if row.type == "channel.raid":
            condition = {"to_broadcaster_user_id": event["to_broadcaster_user_id"]}
        now = datetime.now(timezone.utc).isoformat()
        out.append(
            json.dumps(
                {
                    "metadata": {
                        "message_id": str(uuid.uuid4()),
                        "message_type": "notification",
                        "message_timestamp": now,
                        "subscription_type": row.type,
                        "subscription_version": version,
                    },
                    "payload": {
                        "subscription": {
                            "id": str(uuid.uuid4()),
                            "status": "enabled",
                            "type": row.type,
                            "version": version,
                            "cost": 0,
                            "condition": condition,
                            "transport": {"method": "websocket", "session_id": "bench"},
                            "created_at": now,
                        },
                        "event": event,
                    },
                }
            )
        )
    return out


async def new_database(cluster: EmbeddedPostgres, name: str) -> Database:
    await cluster.create_database(name)
    url = cluster.url_for(name)
    db = Database(await create_pool(url, 4), url)
    await db.upgrade()
    return db


def cluster_cpu_s(cluster: EmbeddedPostgres) -> float:
    """CPU seconds used so far by the postmaster and its children (backends, WAL writer, …)."""
    root, total = postmaster_pid(cluster.pgdata), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if root in (int(stat.parent.name), int(fields[1])):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def batched(
    db: Database, texts: list[str], spool_dir: Path, batch_size: int, cluster: EmbeddedPostgres
) -> dict[str, Any]:
    async with EventStore(db, spool_dir, batch_size=batch_size) as store:
        began, cpu, pg_cpu = time.perf_counter(), time.process_time(), cluster_cpu_s(cluster)
        for n, text in enumerate(texts):
            store.submit(parse_frame(text))
            if n % 2000 == 1999:  # a socket reader yields between frames too
                await asyncio.sleep(0)
        await store.drain()
        elapsed = time.perf_counter() - began
        cpu_us = {
            "python": (time.process_time() - cpu) / len(texts) * 1e6,
            "postgres": (cluster_cpu_s(cluster) - pg_cpu) / len(texts) * 1e6,
        }
        status = store.status()
    assert status["stored"] == len(texts), status
    # Python and PostgreSQL run on different cores: with both cores free, the slower side bounds.
    return {
        "events_per_s": round(len(texts) / elapsed),
        "batches": status["batches"],
        "last_commit_ms": status["last_commit_ms"],
        "cpu_us_per_event": {k: round(v, 1) for k, v in cpu_us.items()},
        "cpu_bound_events_per_s": round(1e6 / max(cpu_us.values())),
    }


async def naive(db: Database, texts: list[str]) -> dict[str, Any]:
    """The store's SQL for a batch of one, one transaction per event."""
    began = time.perf_counter()
    for text in texts:
        entry = Entry(normalise_frame(parse_frame(text)), time.time())
        async with db.pool.acquire() as conn, conn.transaction():
            await write_batch(conn, [entry])
    elapsed = time.perf_counter() - began
    return {"naive_events_per_s": round(len(texts) / elapsed)}


def spool_append_per_frame_us(folder: Path, count: int = 2000) -> dict[str, float]:
    """What writing every frame to a WAL sqlite file before queueing it would cost, per frame."""
    out = {}
    for mode in ("NORMAL", "FULL"):
        conn = sqlite3.connect(folder / f"wal-{mode}.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={mode}")
        conn.execute("CREATE TABLE frames (id INTEGER PRIMARY KEY, text TEXT)")
        text = "x" * 900
        began = time.perf_counter()
        for _ in range(count):
            conn.execute("INSERT INTO frames (text) VALUES (?)", (text,))
        out[mode.lower()] = round((time.perf_counter() - began) / count * 1e6, 1)
        conn.close()
    return out


async def main(events: int, naive_events: int, batch_size: int = 2000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="streamerhub-bench-") as tmp:
        cluster = EmbeddedPostgres(Path(tmp))
        try:
            await cluster.start()
            store_db = await new_database(cluster, "bench_store")
            naive_db = await new_database(cluster, "bench_naive")
            try:
                result: dict[str, Any] = {
                    "events": events,
                    "naive_events": naive_events,
                    "batch_size": batch_size,
                    "load_average": round(os.getloadavg()[0], 2),
                }
                result.update(
                    await batched(store_db, frames(events), Path(tmp), batch_size, cluster)
                )
                result.update(await naive(naive_db, frames(naive_events)))
            finally:
                await store_db.close()
                await naive_db.close()
            result["speedup"] = round(result["events_per_s"] / result["naive_events_per_s"], 1)
            result["spool_append_per_frame_us"] = spool_append_per_frame_us(Path(tmp))
            return result
        finally:
            await cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--naive-events",
        type=int,
        default=None,
        help="events for the one-commit-per-event run (default: min(events, 3000))",
    )
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()
    naive_events = args.naive_events or min(args.events, 3000)
    print(json.dumps(asyncio.run(main(args.events, naive_events, args.batch_size))))
