"""The daemon as a user runs it, pointed at an in-process fake Twitch: capture, status, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from test_eventsub import wait_until

from streamerhub.bot.oauth import Grant
from streamerhub.bot.subscriptions import SUBSCRIPTIONS
from streamerhub.bot.tokens import TokenStore
from streamerhub.crypto import Keyring, write_key_file
from streamerhub.db import Database, create_pool
from streamerhub.fake_twitch import FakeTwitch, delivery, sample_event

pytestmark = pytest.mark.e2e


async def _store_channel(db_url: str, data_dir: Path, fake: FakeTwitch) -> str:
    key = AESGCM.generate_key(bit_length=256)
    write_key_file(data_dir / "master.key", key)
    db = Database(await create_pool(db_url, 2), db_url)
    try:
        token = fake.state.default_token
        await TokenStore(db, Keyring(key)).save_login(
            "1000",
            "streamer",
            "Streamer",
            Grant(token.access_token, token.refresh_token, token.expires_in(), tuple(token.scopes)),
        )
    finally:
        await db.close()
    return token.access_token


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamerhub",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_daemon_captures_an_event_reports_status_and_stops_cleanly(
    daemon_factory, db_url: str, tmp_path: Path
) -> None:
    async with FakeTwitch() as fake:
        env = {
            "STREAMERHUB_DATABASE_URL": db_url,
            "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
            "STREAMERHUB_TWITCH_API_URL": fake.api_url,
            "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
            "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
        }
        daemon = daemon_factory(env=env)
        daemon.data_dir.mkdir(parents=True)
        access = await _store_channel(db_url, daemon.data_dir, fake)
        # Blocking helpers run in threads: the fake lives on this loop and must keep answering.
        await asyncio.to_thread(daemon.start)

        def subscribed() -> bool:
            sessions = fake.state.sessions.values()
            return any(
                len(fake.state.session_subscriptions(s.id)) == len(SUBSCRIPTIONS) + 1
                for s in sessions
            )

        await wait_until(subscribed, 20, "daemon subscribed on the fake")

        _, event = sample_event("channel.cheer", bits=1234)
        outcome = await delivery.deliver(
            fake.state, [{"subscription_type": "channel.cheer", "event": event}]
        )
        assert outcome.delivered == 1
        conn = await asyncpg.connect(db_url)
        try:

            async def stored() -> bool:
                return (
                    await conn.fetchval("SELECT count(*) FROM twitch_cheers WHERE bits = 1234") == 1
                )

            await wait_until(stored, 10, "cheer committed by the daemon")
            raw = await conn.fetchval(
                "SELECT payload FROM twitch_events WHERE message_id = $1", outcome.message_ids[0]
            )
            assert json.loads(raw)["event"]["bits"] == 1234
        finally:
            await conn.close()

        cli_env = {**os.environ, **env, "STREAMERHUB_LOG_FORMAT": "json"}

        async def status() -> str:
            code, out = await _cli(
                "twitch",
                "status",
                "--config",
                str(daemon.config),
                "--data-dir",
                str(daemon.data_dir),
                env=cli_env,
            )
            assert code == 0, out
            return out if "connection: connected, session age" in out else ""

        out = await wait_until(status, 15, "twitch status shows the live connection")
        assert "Streamer (streamer, id 1000): connected" in out
        assert f"{len(SUBSCRIPTIONS) + 1} enabled" in out
        assert "events stored today: 1" in out and "last gap: none" in out

        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
        log = daemon.log()
        assert "Traceback" not in log
        assert access not in log and fake.state.default_token.refresh_token not in log
        assert not fake.state.sessions, "the daemon left its WebSocket open"
