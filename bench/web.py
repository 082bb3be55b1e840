#!/usr/bin/env python3
"""Dashboard figures on a realistic history: server time of the Overview and Events pages, and
the live feed's delay from commit to SSE client at 100 events/s with 10 feeds open.

Generates the analytics benchmark's history (bench/analytics.py: N events over 3 years, 1,000
stream sessions with a sample each minute) in a fresh embedded PostgreSQL (or reuses one with
--data-dir), runs the real daemon app in-process on a free port, signs in through the setup link
like a browser, then:

- Overview: GET /?period=day|week|month|all (cards + both charts rendered), `--runs` each;
- Events: GET /events first page, a type filter, a user filter, a date range and a page deep in
  history (keyset cursor ~1 year back);
- Feed: 10 SSE clients on /feed/events; events written through the real store (raw + typed,
  committed, then published) at 100/s for `--feed-seconds`; delay = SSE receipt − commit.

Server time is the app's own `Server-Timing: app;dur=…` (session, auth, queries, template).
Prints one JSON object. Targets: overview and events p95 ≤ 150 ms, feed delay p95 ≤ 1 s.

    .venv/bin/python bench/web.py --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analytics import generate

from streamerhub.app import DB, HUB, build_app
from streamerhub.config import load_settings
from streamerhub.db import Database, EmbeddedPostgres, create_pool
from streamerhub.events.normalise import normalise
from streamerhub.events.store import EventStore
from streamerhub.log import setup_logging

CHANNEL = "1000"
PASSWORD = "bench-password-123"
UTC = dt.timezone.utc


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values), 2),
        "p95_ms": round(percentile(values, 95), 2),
        "max_ms": round(max(values), 2),
        "runs": len(values),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- history + app


async def prepare_history(url: str, events: int, sessions: int) -> None:
    db = Database(await create_pool(url, 4), url)
    try:
        await db.upgrade()
        fresh = not await db.pool.fetchval("SELECT to_regclass('bench_meta') IS NOT NULL")
    finally:
        await db.close()
    if fresh:
        # A plain connection: the pool's 60 s command timeout is too short for 10M rows.
        conn = await asyncpg.connect(url)
        try:
            now = dt.datetime.now(UTC).replace(microsecond=0)
            await generate(conn, events, sessions, now)
            await conn.execute("CREATE TABLE bench_meta AS SELECT $1::timestamptz AS now", now)
        finally:
            await conn.close()


async def sign_in(http: aiohttp.ClientSession, base: str, data_dir: Path) -> None:
    token_file = data_dir / "setup-token"
    if token_file.exists():
        link = f"{base}/setup/{token_file.read_text().strip()}"
        page = await (await http.get(link)).text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        resp = await http.post(
            link,
            data={"csrf_token": csrf, "login": "bench", "password": PASSWORD, "confirm": PASSWORD},
        )
    else:
        page = await (await http.get(f"{base}/login")).text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        resp = await http.post(
            f"{base}/login", data={"csrf_token": csrf, "login": "bench", "password": PASSWORD}
        )
    assert resp.url.path == "/", f"sign-in failed: {resp.status} {resp.url}"


async def server_ms(http: aiohttp.ClientSession, url: str) -> tuple[float, str]:
    async with http.get(url) as resp:
        body = await resp.text()
        assert resp.status == 200, f"{url}: {resp.status} {body[:300]}"
        timing = resp.headers["Server-Timing"]
    return float(timing.split("dur=")[1]), body


async def measure_pages(http: aiohttp.ClientSession, base: str, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for period in ("day", "week", "month", "all"):
        times = [(await server_ms(http, f"{base}/?period={period}"))[0] for _ in range(runs + 2)]
        out[f"overview_{period}"] = summary(times[2:])
    year_ago = dt.datetime.now(UTC) - dt.timedelta(days=365)
    cursor = f"{int(year_ago.timestamp() * 1_000_000)}_zzzz"
    login = await http.get(f"{base}/events?type=cheers")
    user = re.findall(r"<td>(User\d+)</td>", await login.text())
    pages = {
        "events_first": "/events",
        "events_type": "/events?type=raids",
        "events_user": f"/events?user={user[0] if user else 'user1'}",
        "events_range": f"/events?from={(year_ago - dt.timedelta(days=7)).date()}"
        f"&to={year_ago.date()}",
        "events_deep": f"/events?before={cursor}",
        "events_deep_follows": f"/events?type=follows&before={cursor}",
    }
    for name, path in pages.items():
        times = [(await server_ms(http, base + path))[0] for _ in range(runs + 2)]
        out[name] = summary(times[2:])
    return out


# ----------------------------------------------------------------------------- feed delay


def follow(n: int) -> Any:
    now = dt.datetime.now(UTC).isoformat()
    event = {
        "user_id": str(10_000_000 + n),
        "user_login": f"feedbench{n}",
        "user_name": f"FeedBench{n}",
        "broadcaster_user_id": CHANNEL,
        "broadcaster_user_login": "streamer",
        "broadcaster_user_name": "Streamer",
        "followed_at": now,
    }
    payload = {
        "subscription": {
            "type": "channel.follow",
            "version": "2",
            "condition": {"broadcaster_user_id": CHANNEL},
        },
        "event": event,
    }
    return normalise(str(uuid.uuid4()), "channel.follow", "2", now, payload)


async def feed_client(
    http: aiohttp.ClientSession, url: str, ready: asyncio.Event, received: list[tuple[str, float]]
) -> None:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        ready.set()
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:"):
                received.append((json.loads(line[5:])["id"], time.perf_counter()))


async def measure_feed(
    http: aiohttp.ClientSession,
    base: str,
    app: web.Application,
    db: Any,
    data_dir: Path,
    clients: int,
    rate: int,
    seconds: float,
) -> dict[str, Any]:
    hub = app[HUB]
    committed: dict[str, float] = {}
    submitted: list[str] = []  # message ids in submit order: the store commits in that order
    stores: list[EventStore] = []
    original = hub.events.publish

    def publish(item: dict[str, Any]) -> None:  # the store's wake-up, right after its commit
        stored = stores[0].counters.stored if stores else 0
        now = time.perf_counter()
        for message_id in submitted[len(committed) : stored]:
            committed[message_id] = now
        original(item)

    hub.events.publish = publish  # type: ignore[method-assign]  # timing hook, restored below
    received: list[tuple[str, float]] = []
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [
        asyncio.create_task(
            feed_client(http, f"{base}/feed/events?types=follows", readies[i], received)
        )
        for i in range(clients)
    ]
    await asyncio.gather(*(r.wait() for r in readies))
    await asyncio.sleep(1.0)  # backlogs sent
    received.clear()
    total = int(rate * seconds)
    async with EventStore(db, data_dir / "bench-store", publish=hub.events) as store:
        stores.append(store)
        began = time.perf_counter()
        for n in range(total):
            item = follow(n)
            submitted.append(item.raw.message_id)
            store.submit(item)
            await asyncio.sleep(max(0.0, began + (n + 1) / rate - time.perf_counter()))
        await store.drain()
    deadline = time.perf_counter() + 5
    while len(received) < total * clients and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    hub.events.publish = original  # type: ignore[method-assign]  # undo the timing hook
    # A row can reach a feed before publish() is called (the 1 s database poll ran between the
    # commit and the store's publish): that is a delay of ~0, not a missing delivery.
    delays = [max(0.0, (at - committed[i]) * 1000) for i, at in received if i in committed]
    return {
        "clients": clients,
        "rate_per_s": rate,
        "events": total,
        "deliveries": len(delays),
        "expected_deliveries": total * clients,
        "p50_ms": round(percentile(delays, 50), 1),
        "p95_ms": round(percentile(delays, 95), 1),
        "p99_ms": round(percentile(delays, 99), 1),
        "max_ms": round(max(delays), 1),
    }


# ----------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_logging("warning", "json")
    root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="sh-bench-web-"))
    cluster = EmbeddedPostgres(root / "pg")
    (root / "pg").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"events": args.events}
    await cluster.start()
    runner = None
    try:
        await cluster.create_database()
        started = time.perf_counter()
        await prepare_history(cluster.url, args.events, args.sessions)
        result["history_s"] = round(time.perf_counter() - started, 1)
        config = root / "config.toml"
        config.write_text(
            f'[database]\nurl = "{cluster.url}"\n[general]\ntimezone = "Europe/Paris"\n'
        )
        settings = load_settings(
            config, data_dir=str(root / "daemon"), env={"STREAMERHUB_WEB_PORT": str(free_port())}
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        app = build_app(settings)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        port = settings.web.port
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        # unsafe=True: aiohttp's cookie jar ignores cookies from an IP address otherwise.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await sign_in(http, base, settings.data_dir)
            result["pages"] = await measure_pages(http, base, args.runs)
            result["feed"] = await measure_feed(
                http,
                base,
                app,
                app[DB],
                settings.data_dir,
                args.clients,
                args.rate,
                args.feed_seconds,
            )
        pages = result["pages"]
        result["overview_p95_ms"] = max(
            v["p95_ms"] for k, v in pages.items() if k.startswith("overview")
        )
        result["events_p95_ms"] = max(
            v["p95_ms"] for k, v in pages.items() if k.startswith("events")
        )
        result["feed_delay_p95_ms"] = result["feed"]["p95_ms"]
        result["targets_met"] = {
            "overview_p95_le_150ms": result["overview_p95_ms"] <= 150,
            "events_p95_le_150ms": result["events_p95_ms"] <= 150,
            "feed_delay_p95_le_1000ms": result["feed_delay_p95_ms"] <= 1000,
        }
        return result
    finally:
        if runner is not None:
            await runner.cleanup()
        await cluster.stop()
        if not args.data_dir:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20, help="timed requests per page")
    parser.add_argument("--clients", type=int, default=10, help="open live feeds")
    parser.add_argument("--rate", type=int, default=100, help="events per second into the feed")
    parser.add_argument("--feed-seconds", type=float, default=20)
    parser.add_argument("--data-dir", help="keep the cluster here (and reuse a history made there)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
