#!/usr/bin/env python3
"""End-to-end ingest figures: fake Twitch → WebSocket → EventSub client → store → PostgreSQL.

Prints one JSON object:
- events_per_s: a flood through the fake's WebSocket as fast as it goes, until every event is
  committed raw + typed (EventStore: batched transactions);
- naive_events_per_s: the same path with one transaction per event (the store's SQL for a
  batch of one), in the same run;
- raw_parse_per_s: frames received and parsed by the client, nothing stored;
- p99_commit_ms_at_1000: a steady 1,000 events/s for --steady-seconds (60 by default), latency
  from the frame's message_timestamp (set by the fake as it sends) to the commit of its row;
- lost: events the fake delivered that are not in the database;
- what the analytics triggers cost ingest (issue 5: at most 20 %), two ways, in the same run:
  trigger_slowdown_pct compares events_per_s with events_per_s_without_triggers, floods with
  the triggers disabled alternated with the measured ones (on, off, off, on, …), which other
  load on this shared machine makes noisy; time_in_triggers_pct is the share of the measured
  floods' time PostgreSQL spent inside the trigger functions (track_functions), on the writer's
  path since a batch waits for its statement, and which such noise barely moves;
- cpu_us_per_event: CPU of this process, of PostgreSQL (every process of the cluster) and of
  the fake, per event of the measured floods (wall-clock alone follows the shared machine).
`--chat` runs only a raid-sized chat burst instead (issue 13): --chat-rate chat messages a second
(2,000) with the normal mix of every type on top (--chat-mix-rate, 100/s) for --chat-seconds
(60), and prints lost, p50/p99/max frame→commit (as the steady phase measures it), the
commits' own durations (commit_ms: the database's share), and this process's resident memory
at start and at its peak (the bot and store, as in the daemon).
Targets: 0 lost, p99 ≤ 250 ms, RSS ≤ 150 MB.
Every flood starts from an empty database, after one warm-up flood that is not counted.
The fake runs as its own process (`streamerhub fake-twitch`) so it does not share our CPU; the
database is a fresh embedded PostgreSQL in a temp dir, stopped at the end even on error.
Target: events_per_s ≥ 5,000.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import aiohttp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from ingest_store import cluster_cpu_s

from streamerhub.bot.eventsub import State
from streamerhub.bot.oauth import Grant
from streamerhub.bot.service import BotDeps, TwitchBot
from streamerhub.bot.subscriptions import SUBSCRIPTIONS
from streamerhub.bot.tokens import TokenStore
from streamerhub.config import load_settings
from streamerhub.crypto import Keyring
from streamerhub.db import Database, EmbeddedPostgres, create_pool
from streamerhub.events.batch import write_batch
from streamerhub.events.items import Entry
from streamerhub.events.normalise import normalise_frame
from streamerhub.events.store import EventStore
from streamerhub.fake_twitch import sample_event
from streamerhub.log import setup_logging

BATCH = 500  # events per control request to the fake
TYPES = [t for t, _, _ in SUBSCRIPTIONS]

# ----------------------------------------------------------------------------- fake Twitch


class FakeProcess:
    """`streamerhub fake-twitch` in its own process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamerhub", "fake-twitch"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.urls = json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def mix_event(i: int, tag: str) -> dict[str, Any]:
    """The i-th event of the normal mix: every type in turn, every occurrence distinct (the
    types deduped by an id of their own get a fresh one)."""
    sub_type = TYPES[i % len(TYPES)]
    unique = {
        "channel.follow": {"user_id": f"{tag}{i}"},
        "stream.online": {"id": f"{tag}{i}"},
        "channel.charity_campaign.start": {"id": f"{tag}{i}"},
        "channel.charity_campaign.stop": {"id": f"{tag}{i}"},
        "channel.shared_chat.begin": {"session_id": f"{tag}{i}"},
        "channel.shared_chat.end": {"session_id": f"{tag}{i}"},
    }.get(sub_type, {})
    _, event = sample_event(sub_type, **unique)
    return {"subscription_type": sub_type, "event": event}


def bodies(count: int, tag: str) -> list[bytes]:
    """Control-API bodies of BATCH events each: every type in turn, every occurrence distinct."""
    out, batch = [], []
    for i in range(count):
        batch.append(mix_event(i, tag))
        if len(batch) == BATCH or i == count - 1:
            out.append(json.dumps({"events": batch, "reflect": False}).encode())
            batch = []
    return out


CHATTERS = 5000  # distinct chatters of the burst
_WORDS = ("PogChamp", "gg", "what a play", "LUL", "raid hype", "hello chat", "KEKW", "no way")


def chat_message(i: int, tag: str) -> dict[str, Any]:
    """The i-th message of a raid-sized chat burst: many chatters, short and longer lines."""
    who = str(100_000 + i % CHATTERS)
    text = " ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(1 + i % 12))
    _, event = sample_event(
        "channel.chat.message",
        chatter_user_id=who,
        chatter_user_login=f"chatter{who}",
        chatter_user_name=f"Chatter{who}",
        message_id=f"{tag}{i}",
        message={"text": text, "fragments": [{"type": "text", "text": text}]},
    )
    return {"subscription_type": "channel.chat.message", "event": event}


def chat_bodies(args: argparse.Namespace, path: Path) -> int:
    """--chat: 20 posts a second, each a twentieth of a second of chat plus the normal mix,
    written to `path` one body a line (held on disk, not in the memory being measured); the
    number of events."""
    posts = int(args.chat_seconds * 20)
    chat, mix = args.chat_rate / 20, args.chat_mix_rate / 20
    count = 0
    with path.open("wb") as out:
        for p in range(posts):
            events = [chat_message(i, "c") for i in range(int(p * chat), int((p + 1) * chat))]
            events += [mix_event(i, "x") for i in range(int(p * mix), int((p + 1) * mix))]
            out.write(json.dumps({"events": events, "reflect": False}).encode() + b"\n")
            count += len(events)
    return count


def read_bodies(path: Path) -> Iterator[bytes]:
    with path.open("rb") as lines:
        yield from (line.rstrip(b"\n") for line in lines)


def rss_mb() -> float:
    """This process's resident memory: the bot and the store, as in the daemon."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sender:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.delivered: list[str] = []

    async def post(self, body: bytes) -> None:
        async with self.http.post(
            f"{self.url}/_fake/events", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        self.delivered += answer["message_ids"]


# ----------------------------------------------------------------------------- sinks


class CountingSink:
    """No storage: counts what the client hands over (raw_parse_per_s)."""

    def __init__(self) -> None:
        self.count = 0

    def submit(self, item: Any) -> None:
        self.count += 1

    def dead_letter(self, source: str, reason: str, raw_text: str) -> None:
        raise AssertionError(f"dead letter during the bench: {reason}")

    def record_gap_start(self, channel_id: str, reason: str, at: Any = None) -> Any:
        return at

    def record_gap_end(self, channel_id: str, at: Any = None) -> None:
        pass

    async def drain(self) -> None:
        pass


class NaiveSink(CountingSink):
    """One transaction per event, written in arrival order by one task."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.stored = 0
        self.task = asyncio.create_task(self._write())

    def submit(self, item: Any) -> None:
        self.queue.put_nowait(item)

    async def _write(self) -> None:
        async with self.db.pool.acquire() as conn:
            while True:
                entry = Entry(normalise_frame(await self.queue.get()), time.time())
                async with conn.transaction():  # the store's own SQL, one event at a time
                    await write_batch(conn, [entry])
                self.stored += 1


# ----------------------------------------------------------------------------- phases


async def run_phase(
    ctx: dict[str, Any],
    sink: Any,
    body_list: Iterable[bytes],
    count: int,
    done: Any,
    pace: float | None = None,
) -> float:
    """Start a bot on `sink`, send the bodies (paced or flat out), return seconds to `done`."""
    bot = TwitchBot(BotDeps(ctx["settings"], ctx["db"], ctx["keyring"], sink))
    await bot.start()
    try:
        await wait_for(lambda: _connected(bot), 20)
        sender = Sender(ctx["http"], ctx["fake"].urls["url"])
        started = time.perf_counter()
        for i, body in enumerate(body_list):
            if pace is not None:
                await asyncio.sleep(max(0.0, started + i * pace - time.perf_counter()))
            await sender.post(body)
        assert len(sender.delivered) == count, f"fake delivered {len(sender.delivered)}/{count}"
        await wait_for(done, 600)
        ctx["delivered"] += sender.delivered
        return time.perf_counter() - started
    finally:
        await bot.stop()


def _connected(bot: TwitchBot) -> bool:
    runner = next(iter(bot.runners.values()), None)
    return bool(runner and runner.client and runner.client.stats.state is State.CONNECTED)


async def wait_for(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("bench phase did not finish")
        await asyncio.sleep(0.005)


async def truncate(db: Database) -> None:
    """Empty the events and what the triggers derived from them: every flood starts alike."""
    async with db.pool.acquire() as conn:
        await conn.execute(
            "TRUNCATE twitch_events, stream_sessions, analytics_event_rollup, "
            "viewer_sample_gaps CASCADE"
        )


# The analytics triggers on the typed tables (0003_analytics.sql), for the A/B floods.
TRIGGERS = {
    "twitch_follows": "analytics_follows_ins",
    "twitch_subscriptions": "analytics_subscriptions_ins",
    "twitch_cheers": "analytics_cheers_ins",
    "twitch_raids": "analytics_raids_ins",
    "twitch_streams": "analytics_streams_ins",
}


TRIGGER_FUNCTIONS = (
    "analytics_follows_changed",
    "analytics_subscriptions_changed",
    "analytics_cheers_changed",
    "analytics_raids_changed",
    "analytics_streams_changed",
)


async def set_triggers(db: Database, enabled: bool) -> None:
    async with db.pool.acquire() as conn:
        for table, trigger in TRIGGERS.items():
            await conn.execute(
                f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER {trigger}"
            )


async def flush_stats(db: Database) -> None:
    """Have every pooled connection publish its pending statistics (function times)."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(db.pool.get_size()):
            conn = await stack.enter_async_context(db.pool.acquire())
            await conn.execute("SELECT pg_stat_force_next_flush()")
            await conn.execute("SELECT 1")


async def trigger_seconds(db: Database) -> float:
    """Seconds spent so far inside the analytics trigger functions (nested calls included)."""
    await flush_stats(db)
    async with db.pool.acquire() as conn:
        return float(
            await conn.fetchval(
                "SELECT coalesce(sum(total_time), 0) / 1000 FROM pg_stat_user_functions "
                "WHERE funcname = ANY($1::text[])",
                list(TRIGGER_FUNCTIONS),
            )
        )


async def function_times(db: Database) -> dict[str, list[float]]:
    """[total ms, self ms, calls] of each PL/pgSQL function so far (--functions), largest first."""
    await flush_stats(db)
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT funcname, total_time, self_time, calls "
            "FROM pg_stat_user_functions ORDER BY total_time DESC LIMIT 12"
        )
    return {
        r["funcname"]: [round(r["total_time"]), round(r["self_time"]), r["calls"]] for r in rows
    }


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = EmbeddedPostgres(workdir)
    fake: FakeProcess | None = None
    await cluster.start()
    try:
        await cluster.create_database()
        db = Database(await create_pool(cluster.url, 10), cluster.url)
        try:
            await db.upgrade()
            # Time inside the trigger functions (new sessions get the setting: a new pool).
            await db.pool.execute("ALTER DATABASE streamerhub SET track_functions = 'pl'")
            await db.close()
            db = Database(await create_pool(cluster.url, 10), cluster.url)
            fake = FakeProcess()
            return await measure(args, workdir, db, fake, cluster)
        finally:
            await db.close()
    finally:
        if fake is not None:
            fake.stop()
        await cluster.stop()


async def measure(
    args: argparse.Namespace,
    workdir: Path,
    db: Database,
    fake: FakeProcess,
    cluster: EmbeddedPostgres,
) -> dict[str, Any]:
    keyring = Keyring(AESGCM.generate_key(bit_length=256))
    env = {
        "STREAMERHUB_TWITCH_CLIENT_ID": "",
        "STREAMERHUB_TWITCH_API_URL": fake.urls["api_url"],
        "STREAMERHUB_TWITCH_AUTH_URL": fake.urls["auth_url"],
        "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.urls["ws_url"],
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.urls['url']}/_fake/state") as resp:
            default = (await resp.json())["default_token"]
        env["STREAMERHUB_TWITCH_CLIENT_ID"] = default["client_id"]
        (workdir / "config.toml").write_text("")
        settings = load_settings(workdir / "config.toml", data_dir=str(workdir / "data"), env=env)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await TokenStore(db, keyring).save_login(
            "1000",
            "streamer",
            "Streamer",
            Grant(default["access_token"], default["refresh_token"], 14000, ()),
        )
        ctx = {
            "settings": settings,
            "db": db,
            "keyring": keyring,
            "http": http,
            "fake": fake,
            "cluster": cluster,
            "delivered": [],
        }
        if args.chat:
            return await chat_burst(ctx, args, workdir)
        n, naive_n = args.events, args.naive_events
        result: dict[str, Any] = {"events": n, "naive_events": naive_n}

        counting = CountingSink()
        seconds = await run_phase(ctx, counting, bodies(n, "r"), n, lambda: counting.count >= n)
        result["raw_parse_per_s"] = round(n / seconds)
        ctx["delivered"] = []  # nothing of that phase was meant to be stored

        result.update(await floods(ctx, args, workdir))

        if naive_n:
            naive = NaiveSink(db)
            try:
                seconds = await run_phase(
                    ctx, naive, bodies(naive_n, "n"), naive_n, lambda: naive.stored >= naive_n
                )
                result["naive_events_per_s"] = round(naive_n / seconds)
            finally:
                naive.task.cancel()
                await asyncio.gather(naive.task, return_exceptions=True)
            await truncate(db)
            result["speedup"] = round(result["events_per_s"] / result["naive_events_per_s"], 1)

        if args.steady_seconds > 0:
            result.update(await steady(ctx, args, workdir))
            result["lost"] += result.pop("steady_lost")
    return result


@dataclass
class Flood:
    """One flood's figures."""

    seconds: float
    cpu: dict[str, float]  # CPU seconds used by this process, PostgreSQL and the fake
    trigger_s: float  # seconds PostgreSQL spent inside the analytics triggers
    batches: int
    lost: int


async def floods(ctx: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The store flood with the analytics triggers on, and (ABBA) off, from an empty database."""
    order = [True, False, False, True] * args.trigger_rounds if args.trigger_rounds else [True]
    await flood(ctx, args, workdir / "spool-warm-up", "w-")  # first-flood costs, measured nowhere
    await truncate(ctx["db"])
    runs: dict[bool, list[Flood]] = {True: [], False: []}
    for i, enabled in enumerate(order):
        await set_triggers(ctx["db"], enabled)
        runs[enabled].append(await flood(ctx, args, workdir / f"spool-{i}", f"e{i}-"))
        await truncate(ctx["db"])
    await set_triggers(ctx["db"], True)
    out = summary(runs, args.events)
    if args.functions:
        out["functions_ms"] = await function_times(ctx["db"])
    return out


def summary(runs: dict[bool, list[Flood]], n: int) -> dict[str, Any]:
    """Medians over the floods of each side; the triggers' cost two ways (see the docstring)."""

    def rates(floods: list[Flood]) -> list[int]:
        return [round(n / f.seconds) for f in floods]

    def cpu(floods: list[Flood]) -> dict[str, float]:
        return {
            k: round(sum(f.cpu[k] for f in floods) / (len(floods) * n) * 1e6, 1)
            for k in floods[0].cpu
        }

    on, off = runs[True], runs[False]
    out: dict[str, Any] = {
        "lost": sum(f.lost for f in on + off),
        "batches": sum(f.batches for f in on),
        "events_per_s": round(statistics.median(rates(on))),
        "events_per_s_runs": rates(on),
        "cpu_us_per_event": cpu(on),
        "time_in_triggers_pct": round(
            100 * sum(f.trigger_s for f in on) / sum(f.seconds for f in on), 1
        ),
    }
    if off:
        out.update(
            {
                "events_per_s_without_triggers": round(statistics.median(rates(off))),
                "events_per_s_without_triggers_runs": rates(off),
                "trigger_slowdown_pct": round(
                    100 * (1 - statistics.median(rates(on)) / statistics.median(rates(off))), 1
                ),
                "cpu_us_per_event_without_triggers": cpu(off),
            }
        )
    return out


async def flood(ctx: dict[str, Any], args: argparse.Namespace, spool: Path, tag: str) -> Flood:
    """One flood of args.events through EventStore."""
    spool.mkdir()
    n, db = args.events, ctx["db"]
    body_list = bodies(n, tag)
    store = EventStore(db, spool, **({"batch_size": args.batch_size} if args.batch_size else {}))
    await store.start()
    fake_pid = ctx["fake"].proc.pid
    ctx["delivered"] = []
    try:
        in_triggers = await trigger_seconds(db)
        before = (time.process_time(), cluster_cpu_s(ctx["cluster"]), process_cpu_s(fake_pid))
        seconds = await run_phase(ctx, store, body_list, n, lambda: store.counters.stored >= n)
        after = (time.process_time(), cluster_cpu_s(ctx["cluster"]), process_cpu_s(fake_pid))
        in_triggers = await trigger_seconds(db) - in_triggers
        batches = store.counters.batches
    finally:
        await store.stop()
    cpu = {k: b - a for k, a, b in zip(("python", "postgres", "fake"), before, after)}
    return Flood(seconds, cpu, in_triggers, batches, await lost(db, ctx["delivered"]))


async def steady(ctx: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """A paced rate for a while: latency from the fake's send (the frame's Twitch timestamp) to
    the commit that stored the event: its transaction's start (received_at, shared by the whole
    batch) plus that commit's own duration, which the store times (at most `max_commit_ms`)."""
    commit_ms: list[float] = []

    def committed(_wake_up: dict[str, Any]) -> None:
        if store.counters.last_commit_ms is not None:
            commit_ms.append(store.counters.last_commit_ms)

    per_post = max(1, args.steady_rate // 20)  # 20 posts a second
    count = int(args.steady_rate * args.steady_seconds)
    body_list = _rebatch(bodies(count, "s"), per_post)
    store = EventStore(ctx["db"], workdir / "spool", committed)
    await store.start()
    ctx["delivered"] = []
    try:
        await run_phase(
            ctx,
            store,
            body_list,
            count,
            lambda: store.counters.stored >= count,
            pace=per_post / args.steady_rate,
        )
        await store.drain()
    finally:
        await store.stop()
    async with ctx["db"].pool.acquire() as conn:
        to_start = await conn.fetchval(
            "SELECT array_agg(extract(epoch FROM received_at - occurred_at) * 1000"
            " ORDER BY received_at - occurred_at) FROM twitch_events"
            " WHERE message_id = ANY($1::text[])",
            ctx["delivered"],
        )
    longest_commit = max(commit_ms, default=0.0)
    latencies = [float(ms) + longest_commit for ms in to_start]
    return {
        "steady_events": count,
        "steady_rate": args.steady_rate,
        "p50_commit_ms_at_1000": round(statistics.median(latencies), 1),
        "p99_commit_ms_at_1000": round(latencies[int(len(latencies) * 0.99) - 1], 1),
        "max_commit_ms_at_1000": round(latencies[-1], 1),
        "longest_commit_ms": round(longest_commit, 1),
        "steady_lost": await lost(ctx["db"], ctx["delivered"]),
    }


async def chat_burst(
    ctx: dict[str, Any], args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """--chat: a raid-sized chat burst with the normal mix on top, paced for --chat-seconds.
    Frame→commit: from the frame's Twitch timestamp (set by the fake as it sends) to the end of
    the commit that stored it. A batch's rows share their transaction's start (received_at); the
    store wakes us after each commit, so an event's commit is the first wake-up at or after its
    batch's start. Resident memory is sampled every 0.2 s."""
    commits: list[float] = []
    commit_ms: list[float] = []  # how long each transaction took (where a frame's time goes)

    def committed(_wake_up: dict[str, Any]) -> None:
        commits.append(time.time())
        commit_ms.append(store.counters.last_commit_ms or 0.0)

    count = chat_bodies(args, workdir / "chat-bodies.jsonl")
    rss = [rss_mb()]

    async def sample_rss() -> None:
        while True:
            rss.append(rss_mb())
            await asyncio.sleep(0.2)

    store = EventStore(ctx["db"], workdir / "spool", committed)
    await store.start()
    sampler = asyncio.create_task(sample_rss())
    ctx["delivered"] = []
    fake_pid = ctx["fake"].proc.pid
    before = (time.process_time(), cluster_cpu_s(ctx["cluster"]), process_cpu_s(fake_pid))
    try:
        seconds = await run_phase(
            ctx,
            store,
            read_bodies(workdir / "chat-bodies.jsonl"),
            count,
            lambda: store.counters.stored >= count,
            pace=1 / 20,
        )
        await store.drain()
    finally:
        sampler.cancel()
        await store.stop()
    after = (time.process_time(), cluster_cpu_s(ctx["cluster"]), process_cpu_s(fake_pid))
    cpu = {k: b - a for k, a, b in zip(("python", "postgres", "fake"), before, after)}
    async with ctx["db"].pool.acquire() as conn:
        stamps = await conn.fetch(
            "SELECT extract(epoch FROM received_at)::float8 AS started,"
            " extract(epoch FROM occurred_at)::float8 AS sent FROM twitch_events"
            " WHERE message_id = ANY($1::text[])",
            ctx["delivered"],
        )
        chat_rows = await conn.fetchval("SELECT count(*) FROM twitch_chat_messages")
    latencies = sorted(
        (commits[min(bisect.bisect_left(commits, r["started"]), len(commits) - 1)] - r["sent"])
        * 1000
        for r in stamps
    )
    return {
        "chat_rate": args.chat_rate,
        "mix_rate": args.chat_mix_rate,
        "seconds": args.chat_seconds,
        "events": count,
        "chat_messages_stored": chat_rows,
        "wall_s": round(seconds, 1),
        "lost": await lost(ctx["db"], ctx["delivered"]),
        "p50_frame_to_commit_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_frame_to_commit_ms": (
            round(latencies[int(len(latencies) * 0.99) - 1], 1) if latencies else None
        ),
        "max_frame_to_commit_ms": round(latencies[-1], 1) if latencies else None,
        "batches": store.counters.batches,
        "commit_ms": _quantiles(commit_ms),
        "spooled": store.counters.spooled,
        "rss_start_mb": round(rss[0], 1),
        "rss_peak_mb": round(max(rss), 1),
        # CPU cores the burst kept busy (bot + store, PostgreSQL, the fake): what the machine
        # must have free for the figures above to hold
        "cpu_cores_used": {k: round(v / seconds, 2) for k, v in cpu.items()},
        "load_average_1m": round(os.getloadavg()[0], 1),
    }


def _quantiles(values: list[float]) -> dict[str, float] | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return {
        "p50": round(ordered[len(ordered) // 2], 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max": round(ordered[-1], 1),
    }


def _rebatch(body_list: list[bytes], size: int) -> list[bytes]:
    events = [e for body in body_list for e in json.loads(body)["events"]]
    return [
        json.dumps({"events": events[i : i + size], "reflect": False}).encode()
        for i in range(0, len(events), size)
    ]


async def lost(db: Database, delivered: list[str]) -> int:
    async with db.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM twitch_events WHERE message_id = ANY($1::text[])", delivered
        )
    return len(set(delivered)) - stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="flood size")
    parser.add_argument(
        "--naive-events",
        type=int,
        default=5_000,
        help="flood size for the one-commit-per-event path (0: skip)",
    )
    parser.add_argument("--steady-seconds", type=float, default=60.0, help="0: skip")
    parser.add_argument("--steady-rate", type=int, default=1000, help="events per second")
    parser.add_argument(
        "--trigger-rounds",
        type=int,
        default=1,
        help="ABBA rounds of floods with the analytics triggers on/off (0: one flood, triggers on)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="the store's batch_size for the floods (default: the store's own)",
    )
    parser.add_argument(
        "--functions",
        action="store_true",
        help="also print [total ms, self ms, calls] per PL/pgSQL function",
    )
    parser.add_argument(
        "--chat",
        action="store_true",
        help="only the chat burst: --chat-rate messages/s plus --chat-mix-rate of every type",
    )
    parser.add_argument("--chat-rate", type=int, default=2000, help="chat messages per second")
    parser.add_argument("--chat-mix-rate", type=int, default=100, help="other events per second")
    parser.add_argument("--chat-seconds", type=float, default=60.0, help="length of the burst")
    args = parser.parse_args()
    setup_logging("error", "json")
    with tempfile.TemporaryDirectory(prefix="streamerhub-ingest-") as tmp:
        result = asyncio.run(bench(args, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
