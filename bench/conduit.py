#!/usr/bin/env python3
"""Conduit mode under faults: daemons (as processes) sharing one conduit and one PostgreSQL.

--daemons N daemons, each keeping 2 shards of the fake's conduit, receive mixed subs, cheers and
raids at --rate events/s for --seconds while a random shard's socket is closed mid-burst every
--kill-shard-every s; with two or more daemons, daemon 0 is `kill -9`ed at a third of the run
and restarted --restart-after s later, and daemon 1 (whose database connections go through a
TCP link this script can cut) is cut off from PostgreSQL for --db-cut s at half the run. The fake (in this process) load-balances across enabled
shards and retries a frame its chosen shard did not take on one other shard, as Twitch does.

Prints one JSON object: sent (events Twitch had to send), delivered (distinct message ids the
fake wrote to a socket), stored (of the sent, rows in twitch_events), lost (sent - stored: what
the fake dropped after its one retry, as Twitch does, is counted in twitch_dropped; a dropped
frame may still have reached a daemon just before it died), duplicated (typed rows beyond one per delivered event),
shard_kills, daemon_kills, db_cut_s, takeovers seen in the logs, load_1m (the machine's load
average at the end: other work shares the cores), and no_shard_max_s: the longest window in
which no shard was enabled (sampled every 50 ms). Goal: 0 lost, 0 duplicated.
The database is a fresh embedded PostgreSQL in a temp dir, shared by all daemons like an external
one; everything is stopped at the end even on error.
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
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streamerhub.bot.oauth import Grant
from streamerhub.bot.tokens import TokenStore
from streamerhub.crypto import Keyring, write_key_file
from streamerhub.db import Database, EmbeddedPostgres, create_pool
from streamerhub.fake_twitch import FakeTwitch, conduits, delivery, sample_event
from streamerhub.log import setup_logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from db_link import DatabaseLink  # the tests' database link, which the run cuts

SECRET = "bench-client-secret-0123456789"
TYPED = {"channel.cheer": "twitch_cheers", "channel.subscribe": "twitch_subscriptions"}
TYPED["channel.raid"] = "twitch_raids"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """One `streamerhub run` process with its own data dir and port (restartable)."""

    def __init__(self, workdir: Path, index: int, env: dict[str, str], key: bytes) -> None:
        self.data = workdir / f"daemon-{index}"
        self.data.mkdir(parents=True)
        write_key_file(self.data / "master.key", key)
        self.log = workdir / f"daemon-{index}.log"
        self.env = {**env, "STREAMERHUB_WEB_PORT": str(free_port())}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamerhub", "run", "--data-dir", str(self.data)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def enabled_shards(fake: FakeTwitch) -> list[str]:
    found = list(conduits.world(fake.state).conduits.values())
    return [s.id for s in found[0].shards if s.status == "enabled"] if found else []


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout} s: {what}")


class Run:
    """The traffic, the fault schedule and the monitor, over one fake and one database."""

    def __init__(
        self,
        args: argparse.Namespace,
        fake: FakeTwitch,
        daemons: list[Daemon],
        link: DatabaseLink,
    ) -> None:
        self.args, self.fake, self.daemons, self.link = args, fake, daemons, link
        self.db_cut = 0.0
        self.rng = random.Random(args.seed)
        self.sent: dict[str, str] = {}  # message id -> type
        self.delivered: dict[str, str] = {}  # message ids the fake wrote to a socket
        self.shard_kills = self.daemon_kills = 0
        self.no_shard_max = 0.0
        self.seq = 0

    async def traffic(self) -> None:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < self.args.seconds:
            batch = [self.event() for _ in range(int(elapsed * self.args.rate) - self.seq)]
            if batch:
                outcome = await delivery.deliver(self.fake.state, batch)
                self.delivered.update(dict.fromkeys(outcome.message_ids, ""))
                self.sent.update({i["message_id"]: i["subscription_type"] for i in batch})
            await asyncio.sleep(0.05)

    def event(self) -> dict[str, Any]:
        self.seq += 1
        kind = self.rng.choice(list(TYPED))
        if kind == "channel.raid":
            _, event = sample_event(kind, from_broadcaster_user_id=str(900_000 + self.seq))
        else:
            _, event = sample_event(kind, user_id=str(900_000 + self.seq))
        # Our own message ids: an event the fake gave up on may still have reached a daemon.
        return {"subscription_type": kind, "event": event, "message_id": str(uuid.uuid4())}

    async def shard_faults(self) -> None:
        while True:
            await asyncio.sleep(self.args.kill_shard_every)
            live = enabled_shards(self.fake)
            if live:
                shard = self.rng.choice(live)
                conduits.world(self.fake.state).kills[shard] = self.rng.randint(0, 20)
                self.shard_kills += 1

    async def daemon_faults(self) -> None:
        if len(self.daemons) < 2:
            return
        await asyncio.sleep(self.args.seconds / 3)
        self.daemons[0].kill()
        self.daemon_kills += 1
        await asyncio.sleep(self.args.restart_after)
        self.daemons[0].start()

    async def database_cut(self) -> None:
        """Daemon 1 loses PostgreSQL (Twitch stays reachable) for --db-cut s at half the run."""
        if len(self.daemons) < 2 or self.args.db_cut <= 0:
            return
        await asyncio.sleep(self.args.seconds / 2)
        self.link.sever()
        cut_at = time.monotonic()
        try:
            await asyncio.sleep(self.args.db_cut)
        finally:
            self.link.cut = False
            self.db_cut = time.monotonic() - cut_at

    async def monitor(self) -> None:
        empty_since: float | None = None
        while True:
            now = time.monotonic()
            if enabled_shards(self.fake):
                empty_since = None
            else:
                empty_since = empty_since or now
                self.no_shard_max = max(self.no_shard_max, now - empty_since)
            await asyncio.sleep(0.05)


async def count_stored(db: Database, ids: list[str]) -> int:
    async with db.pool.acquire() as conn:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM twitch_events WHERE message_id = ANY($1::text[])", ids
        )
    return n


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = EmbeddedPostgres(workdir / "pg")
    (workdir / "pg").mkdir()
    await cluster.start()
    daemons: list[Daemon] = []
    try:
        await cluster.create_database()
        db = Database(await create_pool(cluster.url, 4), cluster.url)
        await db.upgrade()
        async with FakeTwitch(client_type="confidential", client_secret=SECRET) as fake:
            key = AESGCM.generate_key(bit_length=256)
            token = fake.state.default_token
            grant = Grant(token.access_token, token.refresh_token, 14000, tuple(token.scopes))
            await TokenStore(db, Keyring(key)).save_login("1000", "streamer", "Streamer", grant)
            env = {
                **os.environ,
                "STREAMERHUB_DATABASE_URL": cluster.url,
                "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
                "STREAMERHUB_TWITCH_CLIENT_SECRET": SECRET,
                "STREAMERHUB_TWITCH_API_URL": fake.api_url,
                "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
                "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
                "STREAMERHUB_LOG_FORMAT": "json",
                "STREAMERHUB_CONFIG": str(workdir / "config.toml"),
            }
            (workdir / "config.toml").write_text("")
            socket_file = next(cluster.socket_dir.glob(".s.PGSQL.*"))
            link = DatabaseLink(str(socket_file))
            await link.start()
            proxied = f"postgresql://streamerhub@127.0.0.1:{link.port}/streamerhub?sslmode=disable"
            for index in range(args.daemons):
                linked = {**env, "STREAMERHUB_DATABASE_URL": proxied} if index == 1 else env
                daemons.append(Daemon(workdir, index, linked, key))
                daemons[-1].start()
            want = 2 * args.daemons
            await until(lambda: len(enabled_shards(fake)) >= want, 90, "every daemon's shards")
            await asyncio.sleep(2)  # subscriptions made by the first round
            run = Run(args, fake, daemons, link)
            side = [
                asyncio.create_task(run.database_cut()),
                asyncio.create_task(run.shard_faults()),
                asyncio.create_task(run.daemon_faults()),
                asyncio.create_task(run.monitor()),
            ]
            try:
                await run.traffic()
            finally:
                for task in side:
                    task.cancel()
                await asyncio.gather(*side, return_exceptions=True)
            ids = list(run.sent)
            stored, last_change = 0, time.monotonic()
            while time.monotonic() - last_change < 10:
                now = await count_stored(db, ids)
                if now != stored:
                    stored, last_change = now, time.monotonic()
                if stored == len(ids):
                    break
                await asyncio.sleep(0.5)
            duplicated = 0
            async with db.pool.acquire() as conn:
                for kind, table in TYPED.items():
                    rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
                    mine = [m for m, t in run.sent.items() if t == kind]
                    duplicated += max(0, rows - await count_stored(db, mine))
            logs = "".join(d.log.read_text(errors="replace") for d in daemons)
            result = {
                "daemons": args.daemons,
                "seconds": args.seconds,
                "rate": args.rate,
                "sent": len(ids),
                "delivered": len(run.delivered),
                "stored": stored,
                "lost": len(ids) - stored,
                "duplicated": duplicated,
                "shard_kills": run.shard_kills,
                "daemon_kills": run.daemon_kills,
                "db_cut_s": round(run.db_cut, 1),
                "takeovers": logs.count("conduit_shard_taken_over"),
                "twitch_retries": fake.state.counters["conduit_retries"],
                "twitch_dropped": fake.state.counters["conduit_dropped"],
                "no_shard_max_s": round(run.no_shard_max, 2),
                "load_1m": round(os.getloadavg()[0], 2),
            }
            link.stop()
        await db.close()
        return result
    finally:
        for daemon in daemons:
            daemon.stop()
        await cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--daemons", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--kill-shard-every", type=float, default=10.0)
    parser.add_argument("--restart-after", type=float, default=5.0)
    parser.add_argument("--db-cut", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    setup_logging("error", "json")
    with tempfile.TemporaryDirectory(prefix="streamerhub-conduit-") as tmp:
        os.chmod(tmp, 0o755)  # as root, the embedded server runs as another user
        result = asyncio.run(bench(args, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
