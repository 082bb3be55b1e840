"""Conduits: the fake models Twitch's conduit transport, and the daemon captures through one.

Fake tests drive real sockets on 127.0.0.1; daemon tests start StreamerHub as a process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time

import aiohttp
import asyncpg
import pytest
from db_link import DatabaseLink
from test_eventsub import wait_until
from test_twitch_e2e import _cli, _store_channel

from streamerhub.bot.subscriptions import SUBSCRIPTIONS
from streamerhub.fake_twitch import FakeTwitch, conduits, delivery, sample_event

SECRET = "fake-client-secret-0123456789"


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def app_token(http, fake: FakeTwitch, secret: str = SECRET) -> str:
    form = {"grant_type": "client_credentials", "client_id": fake.client_id}
    if secret:
        form["client_secret"] = secret
    async with http.post(f"{fake.auth_url}/token", data=form) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert "refresh_token" not in body
        return str(body["access_token"])


async def helix(http, fake, method, path, token, **kwargs):
    headers = {"Authorization": f"Bearer {token}", "Client-Id": fake.client_id}
    async with http.request(method, f"{fake.api_url}{path}", headers=headers, **kwargs) as resp:
        body = await resp.json() if resp.status != 204 else {}
        return resp.status, body


async def open_shard(http, fake):
    ws = await http.ws_connect(fake.ws_url)
    welcome = json.loads((await asyncio.wait_for(ws.receive(), 3)).data)
    return ws, welcome["payload"]["session"]["id"]


async def conduit_with_shards(http, fake, token, count=2):
    status, body = await helix(
        http, fake, "POST", "/eventsub/conduits", token, json={"shard_count": count}
    )
    assert status == 200, body
    conduit_id = body["data"][0]["id"]
    sockets, shards = [], []
    for index in range(count):
        ws, session_id = await open_shard(http, fake)
        sockets.append(ws)
        shards.append(
            {"id": str(index), "transport": {"method": "websocket", "session_id": session_id}}
        )
    status, body = await helix(
        http,
        fake,
        "PATCH",
        "/eventsub/conduits/shards",
        token,
        json={"conduit_id": conduit_id, "shards": shards},
    )
    assert status == 202 and not body["errors"], body
    return conduit_id, sockets


async def subscribe(http, fake, token, conduit_id, sub_type, condition, version="1"):
    body = {
        "type": sub_type,
        "version": version,
        "condition": condition,
        "transport": {"method": "conduit", "conduit_id": conduit_id},
    }
    return await helix(http, fake, "POST", "/eventsub/subscriptions", token, json=body)


async def drain(ws, quiet: float = 0.5) -> tuple[list[dict], int | None]:
    """Every notification until the socket is quiet (or closed), and its close code."""
    got: list[dict] = []
    while True:
        try:
            msg = await asyncio.wait_for(ws.receive(), quiet)
        except asyncio.TimeoutError:
            return got, None
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return got, msg.data if msg.type is aiohttp.WSMsgType.CLOSE else ws.close_code
        frame = json.loads(msg.data)
        if frame["metadata"]["message_type"] == "notification":
            got.append(frame)


async def test_conduits_take_app_tokens_only_and_the_secret(http):
    async with FakeTwitch(client_type="confidential", client_secret=SECRET) as fake:
        form = {"grant_type": "client_credentials", "client_id": fake.client_id}
        async with http.post(f"{fake.auth_url}/token", data=form) as resp:
            assert resp.status == 400  # no secret, no app token
        status, _ = await helix(
            http, fake, "POST", "/eventsub/conduits", fake.token, json={"shard_count": 2}
        )
        assert status == 401  # a user token cannot manage conduits
        token = await app_token(http, fake)
        conduit_id, sockets = await conduit_with_shards(http, fake, token)
        status, body = await helix(
            http, fake, "GET", f"/eventsub/conduits/shards?conduit_id={conduit_id}", token
        )
        assert [s["status"] for s in body["data"]] == ["enabled", "enabled"]
        # The broadcaster's own grant authorises the subscription; the app token creates it.
        status, body = await subscribe(
            http, fake, token, conduit_id, "channel.subscribe", {"broadcaster_user_id": "1000"}
        )
        assert status == 202 and body["data"][0]["transport"] == {
            "method": "conduit",
            "conduit_id": conduit_id,
        }
        status, _ = await subscribe(
            http, fake, token, conduit_id, "channel.subscribe", {"broadcaster_user_id": "4242"}
        )
        assert status == 403  # user 4242 never authorised this client
        status, _ = await subscribe(
            http, fake, fake.token, conduit_id, "channel.cheer", {"broadcaster_user_id": "1000"}
        )
        assert status == 400  # conduit subscriptions need the app token
        for _ in range(5):
            status, _ = await helix(
                http, fake, "POST", "/eventsub/conduits", token, json={"shard_count": 1}
            )
        assert status == 429  # five conduits per client
        for ws in sockets:
            await ws.close()


async def test_a_killed_shard_mid_burst_loses_nothing_and_says_so(http):
    async with FakeTwitch() as fake:
        token = await app_token(http, fake)
        conduit_id, sockets = await conduit_with_shards(http, fake, token)
        await subscribe(
            http, fake, token, conduit_id, "channel.subscribe", {"broadcaster_user_id": "1000"}
        )
        status, _ = await subscribe(
            http,
            fake,
            token,
            conduit_id,
            "conduit.shard.disabled",
            {"client_id": fake.client_id, "conduit_id": conduit_id},
        )
        assert status == 202
        async with http.post(
            f"{fake.url}/_fake/conduits/knobs", json={"kill": {"shard_id": "0", "after": 7}}
        ):
            pass
        version, event = sample_event("channel.subscribe")
        items = [
            {
                "subscription_type": "channel.subscribe",
                "subscription_version": version,
                "event": event,
            }
        ] * 60
        async with http.post(f"{fake.url}/_fake/events", json={"events": items}) as resp:
            sent = await resp.json()
        assert sent["delivered"] == 60
        (first, code), (second, _) = await asyncio.gather(drain(sockets[0]), drain(sockets[1]))
        assert code == 4006 and len(first) == 7  # what it got before the kill, the rest retried
        received = [
            f["metadata"]["message_id"]
            for f in first + second
            if f["metadata"]["subscription_type"] == "channel.subscribe"
        ]
        assert sorted(received) == sorted(sent["message_ids"]) and len(set(received)) == 60
        disabled = [
            f["payload"]["event"]
            for f in second
            if f["metadata"]["subscription_type"] == "conduit.shard.disabled"
        ]
        assert (
            disabled
            and disabled[0]["shard_id"] == "0"
            and disabled[0]["status"] == "websocket_network_error"
        )
        status, body = await helix(
            http, fake, "GET", f"/eventsub/conduits/shards?conduit_id={conduit_id}", token
        )
        assert [s["status"] for s in body["data"]] == ["websocket_network_error", "enabled"]
        await sockets[1].close()


async def test_an_unassigned_session_dies_at_the_deadline_and_a_late_assignment_fails(http):
    async with FakeTwitch(subscribe_deadline=0.5) as fake:
        token = await app_token(http, fake)
        status, body = await helix(
            http, fake, "POST", "/eventsub/conduits", token, json={"shard_count": 1}
        )
        conduit_id = body["data"][0]["id"]
        async with http.post(f"{fake.url}/_fake/conduits/knobs", json={"assign_delay": 1.0}):
            pass
        ws, session_id = await open_shard(http, fake)
        shard = {"id": "0", "transport": {"method": "websocket", "session_id": session_id}}
        status, body = await helix(
            http,
            fake,
            "PATCH",
            "/eventsub/conduits/shards",
            token,
            json={"conduit_id": conduit_id, "shards": [shard]},
        )
        assert status == 202 and body["errors"][0]["id"] == "0" and not body["data"]
        _, code = await drain(ws, quiet=2)
        assert code == 4003


# --- the daemon in conduit mode ------------------------------------------------------------------


def _shards(fake: FakeTwitch) -> list[dict]:
    found = list(conduits.world(fake.state).conduits.values())
    return [s.to_json() for s in found[0].shards] if found else []


def _conduit_subscriptions(fake: FakeTwitch) -> int:
    return sum(
        isinstance(s, conduits.ConduitSubscription) for s in fake.state.subscriptions.values()
    )


async def _conduit_daemon(daemon_factory, db_url: str, fake: FakeTwitch, **extra: str):
    env = {
        "STREAMERHUB_DATABASE_URL": db_url,
        "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
        "STREAMERHUB_TWITCH_CLIENT_SECRET": SECRET,
        "STREAMERHUB_TWITCH_API_URL": fake.api_url,
        "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
        "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
        **extra,
    }
    daemon = daemon_factory(env=env)
    daemon.data_dir.mkdir(parents=True)
    await _store_channel(db_url, daemon.data_dir, fake)
    await asyncio.to_thread(daemon.start)
    return daemon


@pytest.mark.e2e
async def test_a_shard_socket_closed_mid_burst_loses_nothing(daemon_factory, db_url: str) -> None:
    async with FakeTwitch(client_type="confidential", client_secret=SECRET) as fake:
        daemon = await _conduit_daemon(daemon_factory, db_url, fake)

        def ready() -> bool:
            shards = _shards(fake)
            enabled = [s for s in shards if s["status"] == "enabled"]
            # every channel type plus conduit.shard.disabled; no per-channel socket subscriptions
            return len(enabled) == 2 and _conduit_subscriptions(fake) == len(SUBSCRIPTIONS) + 2

        await wait_until(ready, 30, "conduit with two enabled shards and the subscriptions")
        assert not any(fake.state.session_subscriptions(s) for s in fake.state.sessions)
        first_session = _shards(fake)[0]["transport"]["session_id"]

        conduits.world(fake.state).kills["0"] = 300  # shard 0's socket dies mid-burst
        items = []
        for i in range(2000):
            version, event = sample_event("channel.cheer", user_id=str(50_000 + i), bits=i + 1)
            items.append({"subscription_type": "channel.cheer", "event": event})
        outcome = await delivery.deliver(fake.state, items)
        assert outcome.delivered == 2000 and fake.state.counters["conduit_shards_killed"] == 1

        conn = await asyncpg.connect(db_url)
        try:

            async def stored() -> int:
                n = await conn.fetchval(
                    "SELECT count(*) FROM twitch_events WHERE message_id = ANY($1::text[])",
                    outcome.message_ids,
                )
                return n if n == 2000 else 0

            await wait_until(stored, 30, "all 2,000 cheers committed")
        finally:
            await conn.close()

        def reassigned() -> bool:
            shard = _shards(fake)[0]
            return (
                shard["status"] == "enabled" and shard["transport"]["session_id"] != first_session
            )

        await wait_until(reassigned, 15, "shard 0 on a new session")
        conduit_id = next(iter(conduits.world(fake.state).conduits))

        def published() -> dict:
            status = json.loads((daemon.data_dir / "twitch-status.json").read_text())["conduit"]
            # rewritten every 5 s: wait for one written after the burst
            fresh = status and status["conduit_id"] == conduit_id
            return status if fresh and status["notifications"] == 2000 else {}

        status = await wait_until(published, 10, "twitch-status.json names the conduit")
        assert sorted(s["shard_id"] for s in status["shards"]) == [0, 1]
        assert SECRET not in json.dumps(status)
        log = daemon.log()
        assert "conduit_shard_lost" in log and SECRET not in log and "Traceback" not in log

        health = await asyncio.to_thread(daemon.wait_healthy)
        assert health["status"] == "ok" and health["conduit"]["conduit_id"] == conduit_id
        cli_env = {**os.environ, **daemon.env}
        args = ("--config", str(daemon.config), "--data-dir", str(daemon.data_dir))
        code, out = await _cli("twitch", "status", *args, env=cli_env)
        assert code == 0 and f"conduit: {conduit_id} — running" in out, out
        assert "shard 0 (this daemon): enabled" in out and SECRET not in out


@pytest.mark.e2e
async def test_a_second_daemon_grows_the_conduit_and_takes_over_a_killed_one(
    daemon_factory, db_url: str
) -> None:
    async with FakeTwitch(client_type="confidential", client_secret=SECRET) as fake:
        first = await _conduit_daemon(daemon_factory, db_url, fake)
        await wait_until(lambda: _enabled(fake) == 2, 30, "the first daemon's two shards")
        env = {k: v for k, v in first.env.items() if k.startswith("STREAMERHUB_")}
        env.pop("STREAMERHUB_WEB_PORT")
        second = daemon_factory(env=env, data_dir=first.data_dir.parent / "data-second")
        second.data_dir.mkdir(parents=True)
        shutil.copy(first.data_dir / "master.key", second.data_dir / "master.key")
        await asyncio.to_thread(second.start)
        await wait_until(lambda: _enabled(fake) == 4, 30, "the conduit grown to four shards")
        conn = await asyncpg.connect(db_url)
        try:
            owners = await conn.fetch("SELECT shard_id, daemon_id FROM twitch_conduit_shards")
            by_daemon: dict[str, list[int]] = {}
            for row in owners:
                by_daemon.setdefault(row["daemon_id"], []).append(row["shard_id"])
            assert sorted(len(v) for v in by_daemon.values()) == [2, 2]

            assert first.proc is not None
            first.proc.kill()  # kill -9: its sockets drop, its leases are still live
            killed_at = time.monotonic()
            await wait_until(lambda: _enabled(fake) == 2, 10, "the killed daemon's shards down")
            items = []
            for i in range(500):
                _, event = sample_event("channel.cheer", user_id=str(70_000 + i), bits=i + 1)
                items.append({"subscription_type": "channel.cheer", "event": event})
            outcome = await delivery.deliver(fake.state, items)
            assert outcome.delivered == 500  # Twitch sends only to the enabled shards

            async def stored() -> bool:
                n = await conn.fetchval(
                    "SELECT count(*) FROM twitch_events WHERE message_id = ANY($1::text[])",
                    outcome.message_ids,
                )
                return bool(n == 500)

            await wait_until(stored, 20, "the 500 cheers stored by the survivor")
            # conduit.shard.disabled, not the 15 s lease, hands the dead daemon's shards over.
            await wait_until(lambda: _enabled(fake) == 4, 12, "the survivor on all four shards")
            assert time.monotonic() - killed_at < 12
            holders = await conn.fetch("SELECT DISTINCT daemon_id FROM twitch_conduit_shards")
            assert len(holders) == 1
        finally:
            await conn.close()
        assert "conduit_shard_taken_over" in second.log()


def _enabled(fake: FakeTwitch) -> int:
    return sum(s["status"] == "enabled" for s in _shards(fake))


async def test_shard_leases_split_lapse_and_pass_on(db) -> None:
    from streamerhub.bot.shards import ShardClaims

    async with db.pool.acquire() as conn:
        await conn.execute("INSERT INTO twitch_conduits (client_id, conduit_id) VALUES ('c', 'x')")
    first = ShardClaims(db, "c", "first", lease_seconds=1.0)
    second = ShardClaims(db, "c", "second", lease_seconds=30.0)
    assert await first.claim(2) == [0, 1]
    assert await second.claim(2) == [2, 3]  # a joining daemon takes new shards: the conduit grows
    assert await first.claim(2) == [0, 1]  # renewal keeps them
    await asyncio.sleep(1.2)  # the first daemon is cut off: its lease lapses
    assert not first.still_held(0)  # and it will not reassign those shards any more
    assert await second.claim(4) == [0, 1, 2, 3]
    assert await second.take_over(2, "nobody") is False
    assert {r.daemon_id for r in await second.rows()} == {"second"}


@pytest.mark.e2e
async def test_a_daemon_cut_off_from_the_database_lets_its_channels_go_and_loses_nothing(
    daemon_factory, db_url: str, pg_cluster
) -> None:
    socket_file = next(pg_cluster.socket_dir.glob(".s.PGSQL.*"))
    link = DatabaseLink(str(socket_file))
    await link.start()
    database = db_url.split("/")[3].split("?")[0]
    proxied = f"postgresql://streamerhub@127.0.0.1:{link.port}/{database}?sslmode=disable"
    try:
        async with FakeTwitch(client_type="confidential", client_secret=SECRET) as fake:
            daemon = await _conduit_daemon(
                daemon_factory,
                db_url,
                fake,
                STREAMERHUB_DATABASE_URL=proxied,
                STREAMERHUB_CONDUIT_LEASE_SECONDS="3",
            )
            await wait_until(lambda: _enabled(fake) == 2, 30, "two shards")
            await wait_until(
                lambda: _conduit_subscriptions(fake) == len(SUBSCRIPTIONS) + 2, 30, "subscribed"
            )
            link.sever()  # the daemon loses the database; Twitch stays reachable
            cut_at = time.monotonic()
            items = []
            for i in range(300):
                _, event = sample_event("channel.cheer", user_id=str(80_000 + i), bits=i + 1)
                items.append({"subscription_type": "channel.cheer", "event": event})
            outcome = await delivery.deliver(fake.state, items)
            assert outcome.delivered == 300
            await wait_until(
                lambda: "twitch_channels_released" in daemon.log(), 30, "channels let go"
            )
            # lease 3 s + a sync round (5 s) + the lock connection's ping timeout (5 s)
            assert time.monotonic() - cut_at < 3 + 5 + 5 + 3
            link.cut = False
            conn = await asyncpg.connect(db_url)
            try:

                async def stored() -> bool:
                    n = await conn.fetchval(
                        "SELECT count(*) FROM twitch_events WHERE message_id = ANY($1::text[])",
                        outcome.message_ids,
                    )
                    return bool(n == 300)

                await wait_until(stored, 40, "the cheers spooled meanwhile, stored once back")
            finally:
                await conn.close()
    finally:
        link.stop()


async def test_settings_shows_the_conduit_and_its_shards(tmp_path, db_url) -> None:
    from web_support import dashboard

    async with FakeTwitch(client_type="confidential", client_secret=SECRET) as fake:
        extra = (
            f'[twitch]\nclient_id = "{fake.client_id}"\nclient_secret = "{SECRET}"\n'
            f'api_url = "{fake.api_url}"\n'
            f'auth_url = "{fake.auth_url}"\neventsub_url = "{fake.ws_url}"\n'
        )
        async with dashboard(tmp_path, db_url, extra) as dash:
            await dash.create_owner()
            await wait_until(lambda: _enabled(fake) == 2, 20, "two shards")
            conduit_id = next(iter(conduits.world(fake.state).conduits))

            async def shown() -> str:
                page = await (await dash.client.get("/settings")).text()
                return page if "shard 1 (this daemon): enabled" in page else ""

            page = await wait_until(shown, 10, "the settings page lists both shards")
            assert f"{conduit_id} · running" in page and SECRET not in page


@pytest.mark.e2e
async def test_a_daemon_stopping_mid_burst_hands_its_frames_on(daemon_factory, db_url) -> None:
    async with FakeTwitch(client_type="confidential", client_secret=SECRET) as fake:
        first = await _conduit_daemon(daemon_factory, db_url, fake)
        await wait_until(lambda: _enabled(fake) == 2, 30, "the first daemon's two shards")
        env = {k: v for k, v in first.env.items() if k.startswith("STREAMERHUB_")}
        env.pop("STREAMERHUB_WEB_PORT")
        second = daemon_factory(env=env, data_dir=first.data_dir.parent / "data-second")
        second.data_dir.mkdir(parents=True)
        shutil.copy(first.data_dir / "master.key", second.data_dir / "master.key")
        await asyncio.to_thread(second.start)
        await wait_until(lambda: _enabled(fake) == 4, 30, "four shards")
        ids: list[str] = []

        async def burst() -> None:
            for chunk in range(40):
                items = []
                for i in range(100):
                    n = 100 * chunk + i
                    _, event = sample_event("channel.cheer", user_id=str(60_000 + n), bits=n + 1)
                    items.append({"subscription_type": "channel.cheer", "event": event})
                ids.extend((await delivery.deliver(fake.state, items)).message_ids)
                await asyncio.sleep(0.02)

        sending = asyncio.create_task(burst())
        await asyncio.sleep(0.3)
        second.signal(signal.SIGTERM)  # a clean stop in the middle of the burst
        await sending
        assert await asyncio.to_thread(second.wait, 30) == 0
        conn = await asyncpg.connect(db_url)
        try:
            counted: list[int] = []

            async def stored() -> bool:
                n = await conn.fetchval(
                    "SELECT count(*) FROM twitch_events WHERE message_id = ANY($1::text[])", ids
                )
                counted.append(n)
                return bool(n == len(ids) == 4000)

            try:
                await wait_until(stored, 20, "every cheer of the burst stored once")
            except AssertionError as exc:  # say how many, and what the fake did with the rest
                shards = [
                    (s.id, s.status)
                    for c in conduits.world(fake.state).conduits.values()
                    for s in c.shards
                ]
                raise AssertionError(
                    f"{exc}: sent {len(ids)}, stored {counted[-1:]}; fake shards: {shards}; "
                    f"second daemon said: {second.log()[-2000:]}"
                ) from None
        finally:
            await conn.close()


# --- websocket mode (no client secret): several daemons, one socket per channel ----------------


def _subscribed_sessions(fake: FakeTwitch) -> list[str]:
    """Sessions holding the channel's subscriptions: more than one is a channel captured twice."""
    state = fake.state
    return [s for s in state.sessions if state.session_subscriptions(s)]


@pytest.mark.e2e
async def test_websocket_mode_a_daemon_cut_off_from_the_database_never_resubscribes(
    daemon_factory, db_url: str, pg_cluster
) -> None:
    from streamerhub.fake_twitch.websocket import close_session

    socket_file = next(pg_cluster.socket_dir.glob(".s.PGSQL.*"))
    link = DatabaseLink(str(socket_file))
    await link.start()
    database = db_url.split("/")[3].split("?")[0]
    proxied = f"postgresql://streamerhub@127.0.0.1:{link.port}/{database}?sslmode=disable"
    try:
        async with FakeTwitch() as fake:
            env = {
                "STREAMERHUB_DATABASE_URL": proxied,
                "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
                "STREAMERHUB_TWITCH_API_URL": fake.api_url,
                "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
                "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
            }
            owner = daemon_factory(env=env)
            owner.data_dir.mkdir(parents=True)
            await _store_channel(db_url, owner.data_dir, fake)
            await asyncio.to_thread(owner.start)
            await wait_until(lambda: len(_subscribed_sessions(fake)) == 1, 30, "owner subscribed")
            [owners_session] = _subscribed_sessions(fake)
            other = daemon_factory(
                env={**env, "STREAMERHUB_DATABASE_URL": db_url},
                data_dir=owner.data_dir.parent / "data-other",
            )
            other.data_dir.mkdir(parents=True)
            shutil.copy(owner.data_dir / "master.key", other.data_dir / "master.key")
            await asyncio.to_thread(other.start)

            link.sever()  # the owner loses the database (and its channel lock with it)

            def taken_over() -> bool:
                return _subscribed_sessions(fake) not in ([], [owners_session])

            await wait_until(taken_over, 40, "the other daemon subscribed the channel")
            # Twitch now closes the old owner's socket (its subscriptions were deleted).
            await close_session(fake.state.sessions[owners_session], 4000, "internal error")
            await asyncio.sleep(6)  # the owner reconnects at once; before the fix it resubscribed
            assert len(_subscribed_sessions(fake)) == 1, "the channel is captured twice"
            items = []
            for i in range(50):
                _, event = sample_event("channel.cheer", user_id=str(90_000 + i), bits=i + 1)
                items.append({"subscription_type": "channel.cheer", "event": event})
            outcome = await delivery.deliver(fake.state, items)
            assert outcome.delivered == 50  # one frame per event: one daemon captures
            assert "eventsub_resubscribe_withheld" in owner.log()
    finally:
        link.stop()


async def test_ownership_is_confirmed_only_while_our_lock_connection_holds_the_lock(db) -> None:
    from streamerhub.bot.ownership import Ownership

    ownership = Ownership(db, lambda: None)
    await ownership.ensure()
    assert await ownership.take("42")
    assert await ownership.confirm("42")
    assert not await ownership.confirm("43")  # never ours
    assert ownership._backend is not None
    async with db.pool.acquire() as conn:
        await conn.fetchval("SELECT pg_terminate_backend($1, 5000)", ownership._backend[0])
    assert not await ownership.confirm("42")  # the lock went with its connection
    await ownership.close()
