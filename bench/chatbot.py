#!/usr/bin/env python3
"""Chat bot figures: how fast a command is answered while chat floods, and that capture loses
nothing meanwhile.

The daemon runs as `streamerhub run` (its own process) against a fresh embedded PostgreSQL and
the fake Twitch (in this process). For --seconds, the fake's chat carries --rate messages a second
(channel.chat.message notifications, in bursts every 100 ms); --commands-per-s of them are
`!ping <n>` from distinct viewers. Each answer's latency is from the moment its message left the
fake to the moment the bot's Send Chat Message reached the fake.

Prints one JSON object:
- chat_per_s: the chat rate achieved; commands, answered, and answer_ms p50/p99/max;
- lost: notifications the fake delivered that are not stored in twitch_events (capture);
- chatbot: the daemon's own counters (received, dropped, sent, skipped, refused).
Target: answer_ms p99 < 1000 at 500 msg/s, lost 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streamerhub.bot.oauth import Grant
from streamerhub.bot.subscriptions import SUBSCRIPTIONS
from streamerhub.bot.tokens import TokenStore
from streamerhub.crypto import Keyring, write_key_file
from streamerhub.db import Database, EmbeddedPostgres, create_pool
from streamerhub.fake_twitch import FakeTwitch, delivery
from streamerhub.fake_twitch.chat import chat_event, room
from streamerhub.log import setup_logging
from streamerhub.web.auth import api_token

TICK_S = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def store_channel(url: str, data_dir: Path, fake: FakeTwitch) -> None:
    key = AESGCM.generate_key(bit_length=256)
    write_key_file(data_dir / "master.key", key)
    db = Database(await create_pool(url, 2), url)
    try:
        await db.upgrade()
        token = fake.state.default_token
        grant = Grant(
            token.access_token, token.refresh_token, token.expires_in(), tuple(token.scopes)
        )
        await TokenStore(db, Keyring(key)).save_login("1000", "streamer", "Streamer", grant)
    finally:
        await db.close()


def start_daemon(workdir: Path, url: str, fake: FakeTwitch, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STREAMERHUB_DATABASE_URL": url,
        "STREAMERHUB_WEB_PORT": str(port),
        "STREAMERHUB_LOG_LEVEL": "warning",
        "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
        "STREAMERHUB_TWITCH_API_URL": fake.api_url,
        "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
        "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
    }
    config = workdir / "config.toml"
    config.write_text("")
    argv = [sys.executable, "-m", "streamerhub", "run", "--config", str(config)]
    log = open(workdir / "daemon.log", "ab")  # the child writes to it
    return subprocess.Popen(
        [*argv, "--data-dir", str(workdir / "data")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"timed out: {what}")


async def flood(fake: FakeTwitch, args: argparse.Namespace) -> tuple[list[str], dict[str, float]]:
    """The chat burst; (every delivered message id, send time of each !ping by its number)."""
    per_tick = max(1, round(args.rate * TICK_S))
    command_every = max(1, round(args.rate / args.commands_per_s))
    ids: list[str] = []
    asked: dict[str, float] = {}
    n, start = 0, time.monotonic()
    ticks = round(args.seconds / TICK_S)
    for tick in range(ticks):
        items, pings = [], []
        for _ in range(per_tick):
            n += 1
            user = str(100_000 + n)
            text = f"!ping {n}" if n % command_every == 0 else f"chat line {n} PogChamp"
            if text.startswith("!ping"):
                pings.append(str(n))
            event = chat_event(fake.state, "1000", user, text, [])
            items.append({"subscription_type": "channel.chat.message", "event": event})
        sent_at = time.time()
        outcome = await delivery.deliver(fake.state, items, reflect=False)
        ids += outcome.message_ids
        asked.update({p: sent_at for p in pings})
        await asyncio.sleep(max(0.0, start + (tick + 1) * TICK_S - time.monotonic()))
    return ids, asked


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = EmbeddedPostgres(workdir / "pg")
    await cluster.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        await cluster.create_database()
        async with FakeTwitch() as fake, aiohttp.ClientSession() as http:
            (workdir / "data").mkdir(mode=0o700)
            await store_channel(cluster.url, workdir / "data", fake)
            port = free_port()
            proc = start_daemon(workdir, cluster.url, fake, port)

            async def subscribed() -> bool:
                return any(
                    len(fake.state.session_subscriptions(s.id)) == len(SUBSCRIPTIONS) + 1
                    for s in fake.state.sessions.values()
                )

            await wait_for(subscribed, 60, "the daemon subscribing")
            base = f"http://127.0.0.1:{port}/api/v1/chatbot"
            headers = {"Authorization": f"Bearer {api_token(workdir / 'data')}"}
            command = {"name": "ping", "response": "pong {args}", "cooldown_s": 0}
            async with http.post(f"{base}/commands", json=command, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
            on = {"enabled": True}
            async with http.put(f"{base}/channels/1000", json=on, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
            started = time.monotonic()
            ids, asked = await flood(fake, args)
            elapsed = time.monotonic() - started
            answered: dict[str, float] = {}

            async def all_answered() -> bool:
                for sent in room(fake.state).sent:
                    tag = sent["message"].removeprefix("pong ")
                    answered.setdefault(tag, sent["at"])
                return set(asked) <= set(answered)

            await wait_for(all_answered, 30, "every !ping answered")
            db = Database(await create_pool(cluster.url, 2), cluster.url)
            try:
                stored = await db.pool.fetch(
                    "SELECT message_id FROM twitch_events WHERE message_id = ANY($1::text[])", ids
                )
            finally:
                await db.close()
            async with http.get(base, headers=headers) as resp:
                status = (await resp.json())["status"]
        latencies = sorted((answered[p] - asked[p]) * 1000 for p in asked)
        return {
            "seconds": args.seconds,
            "chat_per_s": round(len(ids) / elapsed),
            "commands": len(asked),
            "answered": sum(1 for p in asked if p in answered),
            "answer_ms": {
                "p50": round(statistics.median(latencies), 1),
                "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
                "max": round(latencies[-1], 1),
            },
            "delivered": len(ids),
            "lost": len(ids) - len(stored),
            "chatbot": status,
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        await cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=500, help="chat messages per second")
    parser.add_argument(
        "--commands-per-s",
        type=float,
        default=2.0,
        help="!ping commands per second among them (Twitch lets the bot send 100 per 30 s)",
    )
    args = parser.parse_args()
    setup_logging("error", "json")
    with tempfile.TemporaryDirectory(prefix="streamerhub-chatbot-") as tmp:
        result = asyncio.run(measure(args, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
