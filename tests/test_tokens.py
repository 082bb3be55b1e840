"""OAuth: device login, sealed storage, refresh on 401 behind a lock that never wedges, revocation."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest
from test_eventsub import Rig, _count_is, rig, wait_until

from streamerhub.bot.helix import Helix, HelixError
from streamerhub.bot.oauth import LOGIN_SCOPES, OAuth, TokenError, TokenRevoked
from streamerhub.bot.tokens import TokenStore, load_channel_token
from streamerhub.crypto import aad_for, load_keyring
from streamerhub.fake_twitch import FakeTwitch, sample_event


async def _stored_access(rig: Rig, channel_id: str) -> str | None:
    blob = await rig.value(
        "SELECT access_token_sealed FROM twitch_channels WHERE channel_id = $1", channel_id
    )
    if blob is None:
        return None
    return rig.keyring.open_str(blob, aad_for("twitch_channels", channel_id, "access_token_sealed"))


def _oauth(rig: Rig) -> OAuth:
    return OAuth(rig.http, rig.fake.auth_url, rig.fake.client_id)


async def test_expired_token_refreshes_once_on_401_and_capture_carries_on(rig: Rig) -> None:
    grant = await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    runner = bot.runners["1000"]
    await rig.control("token", {"access_token": grant["access_token"], "expired": True})
    # A fresh session makes ~26 concurrent subscription calls, every one answered 401.
    await rig.control("close", {"code": 4000})
    await wait_until(lambda: runner.client.stats.gaps == 1, 5, "gap noticed")
    await rig.wait_subscribed(bot)
    assert runner.token.refreshes == 1
    new_access = await _stored_access(rig, "1000")
    assert new_access not in (None, grant["access_token"])
    assert runner.token.access_token() == new_access
    await rig.deliver(("channel.follow", sample_event("channel.follow")[1]))
    await wait_until(lambda: _count_is(rig, "twitch_follows", 1), 5, "event after refresh")
    state = await rig.control("state")
    assert state["default_token"]  # the fake still answers; nothing was revoked
    assert await rig.value("SELECT status FROM twitch_channels") == "connected"


async def test_a_failed_or_cancelled_refresh_never_wedges_the_lock(rig: Rig) -> None:
    grant = await rig.connect()
    token = await load_channel_token(TokenStore(rig.db, rig.keyring), _oauth(rig), "1000")
    stale = token.access_token()
    await rig.control("fail", {"path": "/oauth2/token", "status": 503, "count": 1})
    with pytest.raises(TokenError):
        await token.refresh(stale)
    # Cancelled while Twitch hangs: the lock must be free again at once.
    await rig.control("fail", {"path": "/oauth2/token", "status": "timeout", "count": 1})
    hung = asyncio.create_task(token.refresh(stale))
    await asyncio.sleep(0.3)
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung
    # Ten callers at once after that: one refresh, the same new token for all.
    fresh = await asyncio.wait_for(asyncio.gather(*(token.refresh(stale) for _ in range(10))), 5)
    assert len(set(fresh)) == 1 and fresh[0] != grant["access_token"]
    assert token.refreshes == 1
    assert await _stored_access(rig, "1000") == fresh[0]


async def test_revoked_grant_disconnects_that_channel_and_the_other_keeps_running(rig: Rig) -> None:
    await rig.connect("1000")
    doomed = await rig.connect("2000")
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot, "1000")
    await rig.wait_subscribed(bot, "2000")
    await rig.control("token", {"access_token": doomed["access_token"], "revoked": True})
    await rig.control("close", {"code": 4000})

    async def disconnected() -> bool:
        return (
            await rig.value("SELECT status FROM twitch_channels WHERE channel_id = '2000'")
            == "disconnected"
        )

    await wait_until(disconnected, 10, "channel 2000 disconnected")
    row = (
        await rig.fetch(
            "SELECT status_reason, access_token_sealed, refresh_token_sealed "
            "FROM twitch_channels WHERE channel_id = '2000'"
        )
    )[0]
    assert "refresh token" in row["status_reason"] and "twitch login" in row["status_reason"]
    assert row["access_token_sealed"] is None and row["refresh_token_sealed"] is None
    await rig.wait_subscribed(bot, "1000")
    await rig.deliver(("channel.follow", sample_event("channel.follow")[1]))
    await wait_until(lambda: _count_is(rig, "twitch_follows", 1), 5, "channel 1000 still captures")
    status = {s["channel_id"]: s for s in bot.status()}
    assert status["2000"]["state"] == "disconnected" and "refresh token" in status["2000"]["reason"]
    assert status["1000"]["state"] == "connected"
    await bot.sync()  # a revoked channel is not restarted, and stays listed with its reason
    assert bot.runners["2000"].state == "disconnected"


async def test_validation_updates_scopes_and_a_dead_token_is_refreshed(rig: Rig) -> None:
    grant = await rig.connect(scopes=["bits:read", "moderator:read:followers"])
    token = await load_channel_token(TokenStore(rig.db, rig.keyring), _oauth(rig), "1000")
    await rig.control("token", {"access_token": grant["access_token"], "scopes": ["bits:read"]})
    info = await token.validate()
    assert info["user_id"] == "1000" and token.scopes == {"bits:read"}
    assert await rig.value("SELECT scopes FROM twitch_channels") == ["bits:read"]
    await rig.control("token", {"access_token": grant["access_token"], "expired": True})
    await token.validate()  # 401 → refresh → validated
    assert token.refreshes == 1
    assert await rig.value(
        "SELECT validated_at > now() - interval '5 seconds' FROM twitch_channels"
    )


async def test_validation_of_a_revoked_grant_disconnects(rig: Rig) -> None:
    grant = await rig.connect()
    token = await load_channel_token(TokenStore(rig.db, rig.keyring), _oauth(rig), "1000")
    await rig.control("token", {"access_token": grant["access_token"], "revoked": True})
    with pytest.raises(TokenRevoked):
        await token.validate()
    assert await rig.value("SELECT status FROM twitch_channels") == "disconnected"


def test_login_asks_only_for_scopes_it_uses() -> None:
    from streamerhub.bot.subscriptions import SUBSCRIPTIONS

    # Every EventSub type's scope, plus setting a multistream job's title: nothing unused.
    needed = {scope for _type, _version, scope in SUBSCRIPTIONS if scope}
    needed.add("channel:manage:broadcast")
    needed.add("user:write:chat")  # the chat bot (bot/chat.py) speaks as the streamer
    needed.add("channel:bot")  # or a separate bot account speaks there (bot/botaccount.py)
    assert set(LOGIN_SCOPES) == needed


async def test_device_login_stores_sealed_tokens_and_never_shows_them(
    db_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    secret = "confidential-app-secret"
    async with FakeTwitch(
        device_interval=1, client_type="confidential", client_secret=secret
    ) as fake:
        env = {
            **os.environ,
            "STREAMERHUB_DATABASE_URL": db_url,
            "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
            "STREAMERHUB_TWITCH_CLIENT_SECRET": secret,
            "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
            "STREAMERHUB_TWITCH_API_URL": fake.api_url,
            "STREAMERHUB_LOG_FORMAT": "json",
        }
        (tmp_path / "none.toml").write_text("")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamerhub",
            "twitch",
            "login",
            "--data-dir",
            str(data_dir),
            "--config",
            str(tmp_path / "none.toml"),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        stdout, stderr = out.decode(), err.decode()
        assert proc.returncode == 0, stdout + stderr
        state = fake.state
        issued = [t for t in state.tokens.values() if t is not state.default_token]
        assert len(issued) == 1
        token = issued[0]
    assert "/oauth2/activate" in stdout and "code:" in stdout
    assert "Connected Twitch channel Streamer (login streamer, id 1000)" in stdout
    for hidden in (token.access_token, token.refresh_token, secret):
        assert hidden not in stdout and hidden not in stderr
    keyring = load_keyring(data_dir, {}, create=False)
    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow("SELECT * FROM twitch_channels WHERE channel_id = '1000'")
    finally:
        await conn.close()
    assert row["status"] == "connected" and row["login"] == "streamer"
    assert set(row["scopes"]) == set(LOGIN_SCOPES)
    opened = keyring.open_str(
        row["access_token_sealed"], aad_for("twitch_channels", "1000", "access_token_sealed")
    )
    assert opened == token.access_token
    assert token.access_token.encode() not in row["access_token_sealed"]
    assert (
        keyring.open_str(
            row["refresh_token_sealed"], aad_for("twitch_channels", "1000", "refresh_token_sealed")
        )
        == token.refresh_token
    )


async def test_helix_waits_for_ratelimit_reset_and_backs_off_on_5xx(rig: Rig) -> None:
    await rig.connect()
    token = await load_channel_token(TokenStore(rig.db, rig.keyring), _oauth(rig), "1000")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    helix = Helix(rig.http, rig.fake.api_url, rig.fake.client_id, token, sleep=sleep)
    await rig.control("fail", {"path": "/helix/users", "status": 429, "count": 1})
    assert (await helix.me())["id"] == "1000"
    # The fake's Ratelimit-Reset says when the bucket is full again: up to a minute away.
    assert len(slept) == 1 and 50 <= slept[0] <= 60
    slept.clear()
    await rig.control("fail", {"path": "/helix/users", "status": 503, "count": 2})
    assert (await helix.me())["id"] == "1000"
    assert len(slept) == 2 and 0.25 <= slept[0] <= 0.75 and 0.5 <= slept[1] <= 1.5
    await rig.control("fail", {"path": "/helix/users", "status": 500, "count": 10})
    with pytest.raises(HelixError) as failed:
        await helix.me()
    assert failed.value.status == 503 and "gave up after 6 attempts" in str(failed.value)
    assert await helix.delete_subscription("nope") is False  # 404: already gone
