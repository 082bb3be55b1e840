"""Conduits: the fake models Twitch's conduit transport, and the daemon captures through one.

Fake tests drive real sockets on 127.0.0.1; daemon tests start StreamerHub as a process.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from streamerhub.fake_twitch import FakeTwitch, sample_event

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
    got = []
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
