#!/usr/bin/env python3
"""Crash figures: the daemon as a process, fed by the fake Twitch, killed with SIGKILL.

Each trial sends numbered events (a flood as fast as the fake goes, or a steady stream at
--rates events/s) and `kill -9`s the daemon: a flood as soon as the daemon has read all of it
off the socket (as its /healthz counts it), a steady stream at a random moment. Then it
restarts the daemon and waits until its store is drained. Per trial: delivered (what the fake
wrote to the socket), stored, duplicated (rows beyond one per delivered event), lost, and the
lost events' span in milliseconds of sending; the summary gives the worst loss in events and in
ms. Events the fake had written but the daemon had not read yet (the kernel's socket buffers)
count as lost here: Twitch would not send them again.

Prints ONE JSON object. Everything runs in a temp dir; every process is stopped at the end.
Example: bench/crash.py --trials 10 --flood 30000 --rates 300 2000
         bench/crash.py --rss-flood 150000   (the daemon's RSS idle, at its peak and after)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from ingest import BATCH, FakeProcess, bodies

from streamerhub.bot.oauth import Grant
from streamerhub.bot.subscriptions import SUBSCRIPTIONS
from streamerhub.bot.tokens import TokenStore
from streamerhub.crypto import Keyring, write_key_file
from streamerhub.db import Database, EmbeddedPostgres, create_pool
from streamerhub.log import setup_logging


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Rig:
    """An embedded PostgreSQL, the fake Twitch and the daemon (restartable), in one data dir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.cluster = EmbeddedPostgres(self.data)
        self.fake: FakeProcess | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.env: dict[str, str] = {}
        self.db: Database | None = None
        self.log = workdir / "daemon.log"

    async def __aenter__(self) -> Rig:
        self.data.mkdir(parents=True, exist_ok=True)
        await self.cluster.start()
        await self.cluster.create_database()
        self.db = Database(await create_pool(self.cluster.url, 4), self.cluster.url)
        await self.db.upgrade()
        self.fake = FakeProcess()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.fake.urls['url']}/_fake/state") as resp:
                default = (await resp.json())["default_token"]
        key = AESGCM.generate_key(bit_length=256)
        write_key_file(self.data / "master.key", key)
        await TokenStore(self.db, Keyring(key)).save_login(
            "1000",
            "streamer",
            "Streamer",
            Grant(default["access_token"], default["refresh_token"], 14000, ()),
        )
        self.env = {
            **os.environ,
            "STREAMERHUB_TWITCH_CLIENT_ID": default["client_id"],
            "STREAMERHUB_TWITCH_API_URL": self.fake.urls["api_url"],
            "STREAMERHUB_TWITCH_AUTH_URL": self.fake.urls["auth_url"],
            "STREAMERHUB_TWITCH_EVENTSUB_URL": self.fake.urls["ws_url"],
            "STREAMERHUB_WEB_PORT": str(self.port),
            "STREAMERHUB_LOG_FORMAT": "json",
        }
        (self.workdir / "config.toml").write_text("")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop_daemon()
        if self.fake is not None:
            self.fake.stop()
        if self.db is not None:
            self.db.pool.terminate()
        await self.cluster.stop()

    # -- the daemon

    async def start_daemon(self) -> None:
        with open(self.log, "ab") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "streamerhub", "run", "--data-dir", str(self.data)],
                env={**self.env, "STREAMERHUB_CONFIG": str(self.workdir / "config.toml")},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            await self.until(self._subscribed, 60, "daemon subscribed on the fake")
        except TimeoutError as exc:  # say why: what the daemon logged and what the fake holds
            assert self.fake is not None
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{self.fake.urls['url']}/_fake/state") as resp:
                    sessions = (await resp.json()).get("sessions")
            said = [
                line
                for line in self.log.read_text(errors="replace").splitlines()[-400:]
                if '"warning"' in line or '"error"' in line
            ]
            raise TimeoutError(f"{exc}; fake sessions: {sessions}; daemon: {said[-15:]}") from None

    def kill_daemon(self) -> None:
        assert self.daemon is not None
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait(10)

    def stop_daemon(self) -> int | None:
        proc, self.daemon = self.daemon, None
        if proc is None or proc.poll() is not None:
            return None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(5)

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError:
            return 0, {}

    async def received_at_least(self, n: int) -> bool:
        _, body = await asyncio.to_thread(self.health)
        return bool((body.get("store") or {}).get("received", 0) >= n)

    async def drained(self) -> bool:
        code, body = await asyncio.to_thread(self.health)
        store = body.get("store") or {}
        return code == 200 and store.get("queued") == 0 and store.get("spool_items") == 0

    async def _subscribed(self) -> bool:
        assert self.fake is not None
        if self.daemon is not None and self.daemon.poll() is not None:
            raise RuntimeError(f"daemon exited: {self.log.read_text()[-3000:]}")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.fake.urls['url']}/_fake/state") as resp:
                state = await resp.json()
        sessions = state.get("sessions") or []
        return any(
            s["status"] == "connected" and s["subscriptions"] >= len(SUBSCRIPTIONS)
            for s in sessions
        )

    @staticmethod
    async def until(check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {timeout} s: {what}")
            await asyncio.sleep(0.01)

    # -- events

    async def send(
        self, n: int, tag: str, rate: float | None, stop_at: float | None = None
    ) -> list[tuple[float, list[str]]]:
        """Send n events (rate None: flat out); returns (monotonic time sent, ids) per chunk."""
        assert self.fake is not None
        chunk = BATCH if rate is None else max(1, int(rate / 20))
        sent: list[tuple[float, list[str]]] = []
        started = time.monotonic()
        url = f"{self.fake.urls['url']}/_fake/events"
        async with aiohttp.ClientSession() as http:
            for i, body in enumerate(_rechunk(bodies(n, tag), chunk)):
                if rate is not None:
                    await asyncio.sleep(max(0.0, started + i * chunk / rate - time.monotonic()))
                if stop_at is not None and time.monotonic() >= stop_at:
                    break
                async with http.post(url, data=body) as resp:
                    answer = await resp.json()
                sent.append((time.monotonic(), answer["message_ids"]))
        return sent

    async def stored(self, ids: list[str]) -> tuple[set[str], int]:
        assert self.db is not None
        await self.db.pool.expire_connections()  # a daemon's stop stops the server too
        async with self.db.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT message_id FROM twitch_events WHERE message_id = ANY($1::text[])", ids
            )
        found = [r[0] for r in rows]
        return set(found), len(found) - len(set(found))


def _rechunk(body_list: list[bytes], size: int) -> list[bytes]:
    events = [e for body in body_list for e in json.loads(body)["events"]]
    return [
        json.dumps({"events": events[i : i + size], "reflect": False}).encode()
        for i in range(0, len(events), size)
    ]


def outcome(sent: list[tuple[float, list[str]]], stored: set[str], dup: int) -> dict[str, Any]:
    delivered = [i for _, ids in sent for i in ids]
    lost_at = [t for t, ids in sent for i in ids if i not in stored]
    return {
        "delivered": len(delivered),
        "stored": len(stored),
        "duplicated": dup,
        "lost": len(delivered) - len(stored),
        "lost_window_ms": round((max(lost_at) - min(lost_at)) * 1000, 1) if lost_at else 0.0,
    }


async def trial(rig: Rig, n: int, kind: str, rate: float | None, right_after: bool) -> dict:
    tag = f"t{random.getrandbits(40):x}-"
    await rig.start_daemon()
    if rate is None:
        _, before = await asyncio.to_thread(rig.health)
        base = before["store"]["received"]
        sent = await rig.send(n, tag, None)
        if right_after:  # kill as soon as the daemon has read the whole flood off the socket
            await rig.until(lambda: rig.received_at_least(base + n), 60, "flood read")
        else:
            await asyncio.sleep(random.uniform(0, 0.5))
    else:
        seconds = n / rate
        kill_at = time.monotonic() + random.uniform(0.3 * seconds, 0.9 * seconds)
        sent = await rig.send(n, tag, rate, stop_at=kill_at)
    rig.kill_daemon()
    await rig.start_daemon()
    await rig.until(rig.drained, 120, "store drained after restart")
    ids = [i for _, chunk in sent for i in chunk]
    stored, dup = await rig.stored(ids)
    rig.stop_daemon()
    return {"kind": kind, **outcome(sent, stored, dup)}


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}


def memory_parts(pid: int) -> dict[str, float]:
    """Where the resident memory is (MB): glibc's main heap, the anonymous mappings (pymalloc
    arenas and malloc's large blocks and thread arenas), and mapped files (code, libraries)."""
    parts = {"heap": 0.0, "anon": 0.0, "files": 0.0}
    name = "files"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5:  # a mapping's first line
            path = head[5] if len(head) > 5 else ""
            name = "heap" if path == "[heap]" else "anon" if not path else "files"
        elif head[0] == "Rss:":
            parts[name] += int(head[1]) / 1024
    return {k: round(v, 1) for k, v in parts.items()}


async def rss_flood(rig: Rig, n: int, settle: float) -> dict[str, Any]:
    """A flood of n events into a fresh daemon: its RSS idle, at the peak, 2 s after the flood
    is stored and `settle` s after, with where the memory sits (heap, anonymous, files)."""
    await rig.start_daemon()
    assert rig.daemon is not None
    await asyncio.sleep(2)
    idle = memory_mb(rig.daemon.pid)["VmRSS"]
    idle_parts = memory_parts(rig.daemon.pid)
    sent = await rig.send(n, f"r{random.getrandbits(40):x}-", None)
    await rig.until(rig.drained, 600, "flood stored")
    drained = time.monotonic()
    await asyncio.sleep(2)
    soon = memory_mb(rig.daemon.pid)
    await asyncio.sleep(max(0.0, drained + settle - time.monotonic()))
    after = memory_mb(rig.daemon.pid)
    parts = memory_parts(rig.daemon.pid)
    ids = [i for _, chunk in sent for i in chunk]
    stored, dup = await rig.stored(ids)
    rig.stop_daemon()
    return {
        "events": n,
        "rss_idle_mb": idle,
        "rss_peak_mb": after["VmHWM"],
        "rss_2s_after_mb": soon["VmRSS"],
        "settle_s": settle,
        "rss_after_mb": after["VmRSS"],
        "rss_idle_parts_mb": idle_parts,
        "rss_after_parts_mb": parts,
        **outcome(sent, stored, dup),
    }


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    trials: list[dict[str, Any]] = []
    async with Rig(workdir) as rig:
        if args.rss_flood:
            return {"rss_flood": await rss_flood(rig, args.rss_flood, args.settle)}
        for t in range(args.trials):
            if t % (len(args.rates) + 1) == 0:
                result = await trial(rig, args.flood, "flood", None, right_after=True)
            else:
                rate = args.rates[t % (len(args.rates) + 1) - 1]
                n = int(rate * args.steady_seconds)
                result = await trial(rig, n, f"steady_{rate}", rate, right_after=False)
            trials.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    return {
        "trials": trials,
        "worst_lost_events": max(t["lost"] for t in trials),
        "worst_lost_ms": max(t["lost_window_ms"] for t in trials),
        "duplicated": sum(t["duplicated"] for t in trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--flood", type=int, default=30_000, help="events per flood trial")
    parser.add_argument("--rates", type=float, nargs="+", default=[300.0, 2000.0])
    parser.add_argument("--steady-seconds", type=float, default=5.0)
    parser.add_argument(
        "--rss-flood",
        type=int,
        default=0,
        help="instead of the trials: the daemon's RSS through one flood of this many events",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=45.0,
        help="with --rss-flood: seconds after the flood is stored to measure 'after'",
    )
    args = parser.parse_args()
    setup_logging("error", "json")
    with tempfile.TemporaryDirectory(prefix="streamerhub-crash-") as tmp:
        os.chmod(tmp, 0o755)  # as root, the embedded server runs as another user
        result = asyncio.run(bench(args, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
