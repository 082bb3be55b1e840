#!/usr/bin/env python3
"""Soak: mixed EventSub traffic through the fake's chaos mode and random faults, for --minutes.

The fake resends a share of frames with the same message_id, shuffles frames within small
windows (progress before begin) and stamps some frames minutes in the past; on top, a seeded
schedule injects one fault every few seconds: a forced close, a session_reconnect, subscription
POSTs applied by Twitch whose answers are lost, an expired token (401 → refresh), EventSub-limit
and rate-limit 429s, and a revocation followed by a new login.

Prints one JSON object: delivered (distinct message ids the fake wrote to a socket), stored (of
those, rows in twitch_events), lost (delivered − stored), duplicated (one occurrence stored under
two message ids), dead_letters (the bench sends no malformed input, so every one counts against
the goal), backfilled, gaps, the faults injected by kind and the client's counters.
Goal: 0 lost, 0 duplicated, 0 dead letters. The database is a fresh embedded PostgreSQL in a temp
dir, stopped at the end even on error; the fake runs in this process on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streamerhub.bot.oauth import Grant
from streamerhub.bot.service import BotDeps, TwitchBot
from streamerhub.bot.subscriptions import SUBSCRIPTIONS
from streamerhub.bot.tokens import TokenStore
from streamerhub.config import load_settings
from streamerhub.crypto import Keyring
from streamerhub.db import Database, EmbeddedPostgres, create_pool
from streamerhub.events.store import EventStore
from streamerhub.fake_twitch import FakeTwitch, sample_event
from streamerhub.log import setup_logging

TYPES = [t for t, _, _ in SUBSCRIPTIONS]
FAULTS = ("close", "reconnect", "lost_answers", "expired_token", "limit_429", "revoke_relogin")


def _distinct(sub_type: str, seq: int) -> dict[str, str]:
    """Fields that make this occurrence a new one where the store dedupes on the event's own
    identity (events/normalise.py event keys): Twitch's documented samples repeat theirs, and
    the same follow, campaign or shared-chat session sent again is rightly stored once."""
    if sub_type == "channel.follow":
        return {"user_id": f"u{seq}"}
    if sub_type == "stream.online" or sub_type.startswith("channel.charity_campaign."):
        return {"id": f"s{seq}"}
    if sub_type.startswith("channel.shared_chat."):
        return {"session_id": f"sc{seq}"}
    return {}


class Soak:
    """The fake, the store and the bot on one database, plus the traffic and fault schedule."""

    def __init__(self, fake: FakeTwitch, db: Database, http: aiohttp.ClientSession, seed: int):
        self.fake, self.db, self.http = fake, db, http
        self.rng = random.Random(seed)
        self.keyring = Keyring(AESGCM.generate_key(bit_length=256))
        self.delivered: set[str] = set()
        self.faults: Counter[str] = Counter()
        self.seq = 0

    async def control(self, name: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.post(f"{self.fake.url}/_fake/{name}", json=body or {}) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"/_fake/{name}: {answer}")
            return answer

    async def login(self) -> None:
        """What `streamerhub twitch login` stores: a fresh grant for channel 1000."""
        grant = await self.control("token", {"user_id": "1000"})
        await TokenStore(self.db, self.keyring).save_login(
            "1000",
            "streamer",
            "Streamer",
            Grant(grant["access_token"], grant["refresh_token"], grant["expires_in"], ()),
        )
        self.access = grant["access_token"]

    async def traffic(self, per_tick: int) -> None:
        """A burst of every type in turn, each occurrence distinct (a sequence number in it)."""
        events = []
        for _ in range(per_tick):
            self.seq += 1
            sub_type = TYPES[self.seq % len(TYPES)]
            _, event = sample_event(sub_type, **_distinct(sub_type, self.seq))
            event["chaos_seq"] = self.seq
            events.append({"subscription_type": sub_type, "event": event})
        answer = await self.control("events", {"events": events, "reflect": False})
        self.delivered.update(answer["message_ids"])

    async def fault(self) -> None:
        kind = self.rng.choice(FAULTS)
        self.faults[kind] += 1
        subscribe = "/helix/eventsub/subscriptions"
        if kind == "close":
            await self.control("close", {"code": 4000})
        elif kind == "reconnect":
            await self.control("reconnect")
        elif kind == "lost_answers":
            fail = {"path": subscribe, "method": "POST", "status": 503, "applied": True}
            await self.control("fail", fail | {"count": 3})
            await self.control("close", {"code": 4000})
        elif kind == "expired_token":
            await self.control("token", {"access_token": self.access, "expired": True})
            await self.control("close", {"code": 4000})
        elif kind == "limit_429":
            await self.control("fail", {"path": subscribe, "status": 429, "count": 2})
            await self.control("close", {"code": 4000})
        else:  # the user revokes one type's authorization, then logs in again
            await self.control(
                "revoke", {"subscription_type": "channel.cheer", "status": "authorization_revoked"}
            )
            await self.login()

    async def figures(self) -> dict[str, Any]:
        async with self.db.pool.acquire() as conn:
            delivered = list(self.delivered)
            stored = await conn.fetchval(
                "SELECT count(*) FROM twitch_events WHERE message_id = ANY($1::text[])", delivered
            )
            duplicated = await conn.fetchval(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM twitch_events"
                " WHERE payload->'event' ? 'chaos_seq'"
                " GROUP BY payload->'event'->>'chaos_seq') d"
            )
            letters = await conn.fetchval("SELECT count(*) FROM dead_letters")
            backfilled = await conn.fetchval("SELECT count(*) FROM twitch_events WHERE backfilled")
            gaps = await conn.fetchval("SELECT count(*) FROM eventsub_gaps")
        return {
            "delivered": len(delivered),
            "stored": stored,
            "lost": len(delivered) - stored,
            "duplicated": int(duplicated),
            "dead_letters": letters,
            "backfilled": backfilled,
            "gaps": gaps,
        }


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = EmbeddedPostgres(workdir)
    await cluster.start()
    try:
        await cluster.create_database()
        db = Database(await create_pool(cluster.url, 10), cluster.url)
        try:
            await db.upgrade()
            return await run(args, workdir, db)
        finally:
            await db.close()
    finally:
        await cluster.stop()


async def run(args: argparse.Namespace, workdir: Path, db: Database) -> dict[str, Any]:
    chaos = {
        "chaos_duplicates": args.duplicates,
        "chaos_reorder": args.reorder,
        "chaos_stale": args.stale,
        "chaos_seed": args.seed,
    }
    async with (
        FakeTwitch(keepalive_default=args.keepalive, **chaos) as fake,
        aiohttp.ClientSession() as http,
    ):
        env = {
            "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
            "STREAMERHUB_TWITCH_CLIENT_TYPE": "public",
            "STREAMERHUB_TWITCH_API_URL": fake.api_url,
            "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
            "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
        }
        (workdir / "config.toml").write_text("")
        settings = load_settings(workdir / "config.toml", data_dir=str(workdir / "data"), env=env)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (workdir / "spool").mkdir()
        store = EventStore(db, workdir / "spool")
        await store.start()
        state = Soak(fake, db, http, args.seed)
        await state.login()
        bot = TwitchBot(BotDeps(settings, db, state.keyring, store))
        await bot.start()
        started = time.monotonic()
        try:
            deadline = started + args.minutes * 60
            next_fault = started + state.rng.uniform(1, 2 * args.fault_every)
            per_tick = max(1, round(args.rate * args.tick))
            while time.monotonic() < deadline:
                await state.traffic(per_tick)
                if time.monotonic() >= next_fault:
                    await state.fault()
                    next_fault = time.monotonic() + state.rng.uniform(1, 2 * args.fault_every)
                await asyncio.sleep(args.tick)
            await asyncio.sleep(args.settle)  # the last frames reach the database
            await store.drain()
            result = await state.figures()
            client = bot.runners["1000"].client if "1000" in bot.runners else None
            stats = client.stats if client else None
            result.update(
                minutes=args.minutes,
                rate_per_s=args.rate,
                faults=dict(state.faults),
                chaos_duplicates_sent=fake.state.counters["chaos_duplicates"],
                client_duplicates_dropped=stats.duplicates if stats else None,
                client_connections=stats.connections if stats else None,
                store_duplicates=store.status()["duplicates"],
            )
            return result
        finally:
            await bot.stop()
            await store.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="soak duration")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--tick", type=float, default=0.5, help="seconds between bursts")
    parser.add_argument("--fault-every", type=float, default=10.0, help="mean seconds per fault")
    parser.add_argument("--duplicates", type=float, default=0.02, help="share resent")
    parser.add_argument("--reorder", type=int, default=5, help="shuffle window (frames)")
    parser.add_argument("--stale", type=float, default=0.01, help="share with old timestamps")
    parser.add_argument("--keepalive", type=float, default=5.0, help="welcome keepalive (s)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to let frames land")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    setup_logging("error", "json")
    with tempfile.TemporaryDirectory(prefix="streamerhub-chaos-") as tmp:
        result = asyncio.run(soak(args, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
