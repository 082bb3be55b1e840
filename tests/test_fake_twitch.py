"""The fake Twitch behaves like Twitch: real sockets on 127.0.0.1, observable behaviour only."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from streamerhub.fake_twitch import SUBSCRIPTION_TYPES, FakeTwitch, sample_event

RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
FOLLOW = {"broadcaster_user_id": "1000", "moderator_user_id": "1000"}


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def helix_headers(fake: FakeTwitch, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or fake.token}", "Client-Id": fake.client_id}


async def connect(http, url: str):
    ws = await http.ws_connect(url)
    welcome = await next_frame(ws)
    return ws, welcome


async def next_frame(ws, timeout: float = 3.0) -> dict:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def close_code(ws, timeout: float = 3.0) -> int:
    """Read until the server closes; the close code it sent."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code
        assert msg.type is aiohttp.WSMsgType.TEXT, msg


async def subscribe(
    http, fake, session_id, sub_type="channel.follow", condition=None, version=None, token=None
):
    body = {
        "type": sub_type,
        "version": version or _version(sub_type),
        "condition": condition
        or (FOLLOW if sub_type == "channel.follow" else {"broadcaster_user_id": "1000"}),
        "transport": {"method": "websocket", "session_id": session_id},
    }
    async with http.post(
        f"{fake.api_url}/eventsub/subscriptions", json=body, headers=helix_headers(fake, token)
    ) as resp:
        return resp.status, await resp.json()


def _version(sub_type: str) -> str:
    return next(row.version for row in SUBSCRIPTION_TYPES if row.type == sub_type)


async def control(http, fake, name: str, body: dict) -> dict:
    async with http.post(f"{fake.url}/_fake/{name}", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def post_event(http, fake, sub_type: str, **overrides) -> dict:
    version, event = sample_event(sub_type, **overrides)
    return await control(
        http,
        fake,
        "events",
        {"subscription_type": sub_type, "subscription_version": version, "event": event},
    )


def session_id(welcome: dict) -> str:
    return welcome["payload"]["session"]["id"]


# --- EventSub WebSocket ------------------------------------------------------------------------


async def test_welcome_then_keepalive_after_the_timeout(http):
    async with FakeTwitch(keepalive_default=1) as fake:
        ws, welcome = await connect(http, fake.ws_url)
        started = time.monotonic()
        try:
            meta, session = welcome["metadata"], welcome["payload"]["session"]
            assert meta["message_type"] == "session_welcome"
            assert RFC3339_NS.match(meta["message_timestamp"])
            assert "subscription_type" not in meta
            assert session["status"] == "connected" and session["reconnect_url"] is None
            assert session["keepalive_timeout_seconds"] == 1
            assert RFC3339_NS.match(session["connected_at"])
            assert (await subscribe(http, fake, session["id"]))[0] == 202
            keepalive = await next_frame(ws)
            waited = time.monotonic() - started
            assert keepalive["metadata"]["message_type"] == "session_keepalive"
            assert keepalive["payload"] == {}
            assert 0.8 <= waited <= 1.8
        finally:
            await ws.close()


@pytest.mark.parametrize(("asked", "granted"), [("3", 10), ("10", 10), ("9999", 600)])
async def test_keepalive_query_is_clamped_to_10_600(http, asked, granted):
    async with FakeTwitch(keepalive_default=1) as fake:
        ws, welcome = await connect(http, f"{fake.ws_url}?keepalive_timeout_seconds={asked}")
        try:
            assert welcome["payload"]["session"]["keepalive_timeout_seconds"] == granted
            with pytest.raises(asyncio.TimeoutError):  # no keepalive before 10 s
                await asyncio.wait_for(ws.receive(), 0.3)
        finally:
            await ws.close()


async def test_unused_connection_is_closed_4003(http):
    async with FakeTwitch(keepalive_default=1) as fake:
        ws, _ = await connect(http, fake.ws_url)
        started = time.monotonic()
        try:
            assert await close_code(ws) == 4003
            assert 0.8 <= time.monotonic() - started <= 2.0
        finally:
            await ws.close()


async def test_client_data_frame_is_closed_4001(http):
    async with FakeTwitch() as fake:
        ws, _ = await connect(http, fake.ws_url)
        try:
            await ws.send_str('{"hello": "twitch"}')
            assert await close_code(ws) == 4001
        finally:
            await ws.close()


async def test_unanswered_ping_is_closed_4002(http):
    async with FakeTwitch(ping_interval=0.3) as fake:
        ws = await http.ws_connect(fake.ws_url, autoping=False)
        try:
            welcome = await next_frame(ws)
            await subscribe(http, fake, session_id(welcome))
            msg = await asyncio.wait_for(ws.receive(), 2)
            assert msg.type is aiohttp.WSMsgType.PING
            assert await close_code(ws) == 4002
        finally:
            await ws.close()


async def test_stalled_server_stops_keepalives_until_resumed(http):
    async with FakeTwitch(keepalive_default=1) as fake:
        ws, welcome = await connect(http, fake.ws_url)
        try:
            await subscribe(http, fake, session_id(welcome))
            await control(http, fake, "keepalive", {"enabled": False})
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.receive(), 1.5)
            await control(http, fake, "keepalive", {"enabled": True})
            frame = await next_frame(ws, timeout=1.0)
            assert frame["metadata"]["message_type"] == "session_keepalive"
        finally:
            await ws.close()


# --- Subscriptions -------------------------------------------------------------------------


async def test_subscribe_answers_like_helix(http):
    async with FakeTwitch() as fake:
        ws, welcome = await connect(http, fake.ws_url)
        sid = session_id(welcome)
        try:
            status, body = await subscribe(http, fake, sid)
            assert status == 202
            sub = body["data"][0]
            assert sub["status"] == "enabled" and sub["cost"] == 0 and sub["id"]
            assert sub["transport"] == {"method": "websocket", "session_id": sid}
            assert body["max_total_cost"] == 10
            assert (await subscribe(http, fake, sid))[0] == 409
            assert (await subscribe(http, fake, sid, token="not-a-token"))[0] == 401
            assert (await subscribe(http, fake, "no-such-session"))[0] == 400
            hype = "channel.hype_train.begin"
            assert (await subscribe(http, fake, sid, hype, version="1"))[0] == 400  # withdrawn
            assert (await subscribe(http, fake, sid, hype, version="2"))[0] == 202

            await control(
                http, fake, "token", {"access_token": fake.token, "scopes": ["bits:read"]}
            )
            assert (await subscribe(http, fake, sid, "channel.subscribe"))[0] == 403
            assert (await subscribe(http, fake, sid, "channel.cheer"))[0] == 202
            await control(http, fake, "token", {"access_token": fake.token, "expired": True})
            assert (
                await subscribe(http, fake, sid, "channel.raid", {"to_broadcaster_user_id": "1000"})
            )[0] == 401
        finally:
            await ws.close()


async def test_event_goes_only_to_matching_conditions(http):
    async with FakeTwitch() as fake:
        ws_in, welcome_in = await connect(http, fake.ws_url)
        ws_out, welcome_out = await connect(http, fake.ws_url)
        try:
            await subscribe(
                http,
                fake,
                session_id(welcome_in),
                "channel.raid",
                {"to_broadcaster_user_id": "1000"},
            )
            await subscribe(
                http,
                fake,
                session_id(welcome_out),
                "channel.raid",
                {"from_broadcaster_user_id": "1000"},
            )
            version, event = sample_event("channel.raid", viewers=77)
            answer = await control(
                http,
                fake,
                "events",
                {
                    "subscription_type": "channel.raid",
                    "subscription_version": version,
                    "event": event,
                    "message_id": "fixed-id-1",
                },
            )
            assert answer == {"delivered": 1, "message_ids": ["fixed-id-1"]}
            frame = await next_frame(ws_in)
            assert frame["metadata"]["message_id"] == "fixed-id-1"
            assert frame["metadata"]["subscription_type"] == "channel.raid"
            assert frame["metadata"]["subscription_version"] == "1"
            assert frame["payload"]["event"] == event
            assert frame["payload"]["subscription"]["transport"]["session_id"] == session_id(
                welcome_in
            )

            sent = await post_event(
                http,
                fake,
                "channel.raid",
                from_broadcaster_user_id="1000",
                to_broadcaster_user_id="4242",
            )
            assert sent["delivered"] == 1
            raided = (await next_frame(ws_out))["payload"]["event"]
            assert raided["to_broadcaster_user_id"] == "4242"
            assert (await post_event(http, fake, "channel.raid", to_broadcaster_user_id="1337"))[
                "delivered"
            ] == 0
        finally:
            await ws_in.close()
            await ws_out.close()


async def test_bulk_flood_keeps_order_and_unique_ids(http):
    async with FakeTwitch() as fake:
        ws, welcome = await connect(http, fake.ws_url)
        try:
            await subscribe(http, fake, session_id(welcome))
            events = [
                {
                    "subscription_type": "channel.follow",
                    "event": sample_event("channel.follow", user_id=str(i))[1],
                }
                for i in range(3000)
            ]
            answer = await control(http, fake, "events", {"events": events})
            assert answer["delivered"] == 3000 and len(set(answer["message_ids"])) == 3000
            got = [(await next_frame(ws))["payload"]["event"]["user_id"] for _ in range(3000)]
            assert got == [str(i) for i in range(3000)]
        finally:
            await ws.close()


async def test_disconnect_disables_subscriptions_and_new_socket_starts_empty(http):
    async with FakeTwitch() as fake:
        ws, welcome = await connect(http, fake.ws_url)
        await subscribe(http, fake, session_id(welcome))
        await ws.close()
        await asyncio.sleep(0.1)
        async with http.get(
            f"{fake.api_url}/eventsub/subscriptions", headers=helix_headers(fake)
        ) as resp:
            subs = (await resp.json())["data"]
        assert [s["status"] for s in subs] == ["websocket_disconnected"]
        ws2, _ = await connect(http, fake.ws_url)
        try:
            assert (await post_event(http, fake, "channel.follow"))["delivered"] == 0
        finally:
            await ws2.close()


async def test_reconnect_carries_subscriptions_and_closes_old_socket_4004(http):
    async with FakeTwitch(reconnect_grace=1.0) as fake:
        old, welcome = await connect(http, fake.ws_url)
        new = None
        try:
            await subscribe(http, fake, session_id(welcome))
            await control(http, fake, "reconnect", {})
            notice = await next_frame(old)
            assert notice["metadata"]["message_type"] == "session_reconnect"
            session = notice["payload"]["session"]
            assert session["status"] == "reconnecting" and session["id"] == session_id(welcome)
            new, new_welcome = await connect(http, session["reconnect_url"])
            assert session_id(new_welcome) != session_id(welcome)
            frame_sent = await post_event(http, fake, "channel.follow")
            assert frame_sent["delivered"] == 1
            frame = await next_frame(new)
            assert frame["payload"]["subscription"]["transport"]["session_id"] == session_id(
                new_welcome
            )
            assert await close_code(old) == 4004
            assert (await post_event(http, fake, "channel.follow"))["delivered"] == 1
        finally:
            await old.close()
            if new is not None:
                await new.close()


async def test_stale_reconnect_url_is_closed_4007(http):
    async with FakeTwitch() as fake:
        ws = await http.ws_connect(f"{fake.ws_url}?reconnect=made-up")
        try:
            assert await close_code(ws) == 4007
        finally:
            await ws.close()


async def test_revocation_is_sent_once_and_stops_events(http):
    async with FakeTwitch() as fake:
        ws, welcome = await connect(http, fake.ws_url)
        try:
            await subscribe(http, fake, session_id(welcome), "channel.cheer")
            answer = await control(
                http,
                fake,
                "revoke",
                {"subscription_type": "channel.cheer", "status": "authorization_revoked"},
            )
            assert answer["revoked"] == 1
            frame = await next_frame(ws)
            assert frame["metadata"]["message_type"] == "revocation"
            assert frame["metadata"]["subscription_type"] == "channel.cheer"
            assert frame["payload"]["subscription"]["status"] == "authorization_revoked"
            assert (await post_event(http, fake, "channel.cheer"))["delivered"] == 0
        finally:
            await ws.close()


# --- OAuth ---------------------------------------------------------------------------------


async def test_device_code_flow(http):
    async with FakeTwitch() as fake:
        async with http.post(
            f"{fake.auth_url}/device", data={"client_id": "abc", "scopes": "bits:read"}
        ) as resp:
            device = await resp.json()
        assert {
            "device_code",
            "user_code",
            "verification_uri",
            "interval",
            "expires_in",
        } <= device.keys()
        poll = {
            "client_id": "abc",
            "device_code": device["device_code"],
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        }
        async with http.post(f"{fake.auth_url}/token", data=poll) as resp:
            assert resp.status == 400
            assert (await resp.json())["message"] == "authorization_pending"
        async with http.post(f"{fake.auth_url}/token", data=poll) as resp:
            assert resp.status == 200
            grant = await resp.json()
        assert grant["scope"] == ["bits:read"] and grant["refresh_token"]
        async with http.get(
            f"{fake.auth_url}/validate", headers={"Authorization": f"OAuth {grant['access_token']}"}
        ) as resp:
            info = await resp.json()
        assert info["login"] == "streamer" and info["user_id"] == "1000"
        assert info["client_id"] == "abc" and info["scopes"] == ["bits:read"]


async def test_refresh_tokens_rotate_and_old_ones_die(http):
    async with FakeTwitch() as fake:
        params = {
            "response_type": "code",
            "client_id": "abc",
            "state": "xyz",
            "redirect_uri": "http://localhost:1/callback",
            "scope": "channel:read:polls",
        }
        async with http.get(
            f"{fake.auth_url}/authorize", params=params, allow_redirects=False
        ) as resp:
            assert resp.status == 302
            query = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert query["state"] == ["xyz"]
        form = {
            "client_id": "abc",
            "client_secret": "s",
            "code": query["code"][0],
            "grant_type": "authorization_code",
            "redirect_uri": "http://localhost:1/callback",
        }
        async with http.post(f"{fake.auth_url}/token", data=form) as resp:
            first = await resp.json()

        async def refresh(token: str) -> tuple[int, dict]:
            async with http.post(
                f"{fake.auth_url}/token",
                data={
                    "client_id": "abc",
                    "client_secret": "s",
                    "grant_type": "refresh_token",
                    "refresh_token": token,
                },
            ) as resp:
                return resp.status, await resp.json()

        status, second = await refresh(first["refresh_token"])
        assert status == 200 and second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        assert await refresh(first["refresh_token"]) == (
            400,
            {"status": 400, "message": "Invalid refresh token"},
        )
        await control(
            http, fake, "token", {"access_token": second["access_token"], "revoked": True}
        )
        assert (await refresh(second["refresh_token"]))[0] == 400
        async with http.get(
            f"{fake.auth_url}/validate",
            headers={"Authorization": f"OAuth {second['access_token']}"},
        ) as resp:
            assert resp.status == 401


# --- Helix -------------------------------------------------------------------------------------


async def test_injected_faults_and_rate_limit_headers(http):
    async with FakeTwitch(hang_seconds=0.3) as fake:
        users = f"{fake.api_url}/users"
        await control(http, fake, "fail", {"path": "/helix/users", "status": 429, "count": 1})
        async with http.get(users, headers=helix_headers(fake)) as resp:
            assert resp.status == 429
            assert resp.headers["Ratelimit-Remaining"] == "0"
            assert int(resp.headers["Ratelimit-Reset"]) > time.time()
        await control(http, fake, "fail", {"path": "/helix/", "status": 500, "count": 2})
        for _ in range(2):
            async with http.get(users, headers=helix_headers(fake)) as resp:
                assert resp.status == 500
        await control(http, fake, "fail", {"path": "/helix/users", "status": "timeout"})
        started = time.monotonic()
        async with http.get(users, headers=helix_headers(fake)) as resp:
            assert resp.status == 504 and time.monotonic() - started >= 0.3
        async with http.get(users, headers=helix_headers(fake)) as resp:
            assert resp.status == 200
            assert int(resp.headers["Ratelimit-Remaining"]) > 0
            assert resp.headers["Ratelimit-Limit"] == "800"
            assert (await resp.json())["data"][0]["login"] == "streamer"


async def test_helix_needs_token_and_client_id(http):
    async with FakeTwitch() as fake:
        async with http.get(
            f"{fake.api_url}/users", headers={"Authorization": f"Bearer {fake.token}"}
        ) as resp:
            assert resp.status == 401 and "Ratelimit-Remaining" in resp.headers
        async with http.get(f"{fake.api_url}/users", headers={"Client-Id": "x"}) as resp:
            assert resp.status == 401


async def test_followers_are_paged_newest_first(http):
    async with FakeTwitch() as fake:
        await control(http, fake, "followers", {"user_id": "1000", "count": 45})
        pages, cursor = [], None
        while True:
            params = {"broadcaster_id": "1000", "first": "20"}
            if cursor:
                params["after"] = cursor
            async with http.get(
                f"{fake.api_url}/channels/followers", params=params, headers=helix_headers(fake)
            ) as resp:
                body = await resp.json()
            assert body["total"] == 45
            pages.append(body["data"])
            cursor = body["pagination"].get("cursor")
            if not cursor:
                break
        assert [len(p) for p in pages] == [20, 20, 5]
        stamps = [f["followed_at"] for p in pages for f in p]
        assert stamps == sorted(stamps, reverse=True)
        await control(http, fake, "token", {"access_token": fake.token, "scopes": []})
        async with http.get(
            f"{fake.api_url}/channels/followers",
            params={"broadcaster_id": "1000"},
            headers=helix_headers(fake),
        ) as resp:
            assert await resp.json() == {"total": 45, "data": [], "pagination": {}}


async def test_streams_follow_live_state_and_channel_edits(http):
    async with FakeTwitch() as fake:
        streams = f"{fake.api_url}/streams?user_id=1000"
        async with http.get(streams, headers=helix_headers(fake)) as resp:
            assert (await resp.json())["data"] == []
        await control(http, fake, "live", {"user_id": "1000", "live": True, "viewer_count": 31})
        async with http.patch(
            f"{fake.api_url}/channels?broadcaster_id=1000",
            json={"title": "New title", "game_id": "27471"},
            headers=helix_headers(fake),
        ) as resp:
            assert resp.status == 204
        async with http.get(streams, headers=helix_headers(fake)) as resp:
            stream = (await resp.json())["data"][0]
        assert stream["viewer_count"] == 31 and stream["title"] == "New title"
        assert stream["game_name"] == "Minecraft" and stream["started_at"].endswith("Z")


# --- Payloads, simulation, CLI ----------------------------------------------------------


def test_sample_event_covers_every_subscription_type():
    for row in SUBSCRIPTION_TYPES:
        version, event = sample_event(row.type)
        assert version == row.version
        channel = (
            event.get("broadcaster_user_id")
            or event.get("to_broadcaster_user_id")
            or event.get("broadcaster_id")  # charity events
        )
        assert channel == "1000", row.type
    _, gift = sample_event("channel.subscription.gift", is_anonymous=True)
    assert gift["user_id"] is None and gift["user_login"] is None and gift["total"] > 0
    assert sample_event("channel.hype_train.begin")[0] == "2"


async def test_simulation_emits_events_and_updates_helix(http):
    async with FakeTwitch(simulate=True, speed=60, seed=7) as fake:
        ws, welcome = await connect(http, fake.ws_url)
        try:
            for sub_type in (
                "channel.follow",
                "channel.subscribe",
                "channel.subscription.gift",
                "stream.online",
                "stream.offline",
            ):
                assert (await subscribe(http, fake, session_id(welcome), sub_type))[0] == 202
            seen: dict[str, list] = {}
            deadline = time.monotonic() + 6
            while not (
                {"channel.subscription.gift", "stream.offline"} <= seen.keys()
                and len(seen.get("channel.subscribe", [])) >= 50
            ):
                assert time.monotonic() < deadline, seen.keys()
                frame = await next_frame(ws)
                if frame["metadata"]["message_type"] == "notification":
                    seen.setdefault(frame["metadata"]["subscription_type"], []).append(
                        frame["payload"]["event"]
                    )
            assert any(g["total"] == 50 for g in seen["channel.subscription.gift"])
            assert sum(e["is_gift"] for e in seen["channel.subscribe"]) >= 50
            async with http.get(
                f"{fake.api_url}/subscriptions?broadcaster_id=1000", headers=helix_headers(fake)
            ) as resp:
                assert (await resp.json())["total"] >= 50
        finally:
            await ws.close()


async def test_cli_prints_url_and_stops_on_sigterm(http):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamerhub.fake_twitch",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        url = json.loads(line)["url"]
        async with http.get(f"{url}/_fake/state") as resp:
            assert (await resp.json())["users"][0]["login"] == "streamer"
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- the adversarial knobs (all off by default) --------------------------------------------------


async def test_client_types_follow_twitchs_rules(http):
    async with FakeTwitch(client_type="confidential", client_secret="s3cret") as fake:
        refresh = {
            "grant_type": "refresh_token",
            "refresh_token": fake.state.default_token.refresh_token,
            "client_id": fake.client_id,
        }
        async with http.post(f"{fake.auth_url}/token", data=refresh) as resp:
            assert resp.status == 400 and (await resp.json())["message"] == "missing client secret"
        async with http.post(
            f"{fake.auth_url}/token", data=refresh | {"client_secret": "s3cret"}
        ) as resp:
            assert resp.status == 200  # the grant survived the refused attempt
    async with FakeTwitch(client_type="public") as fake:
        code = {"grant_type": "authorization_code", "code": "x", "client_id": fake.client_id}
        async with http.post(f"{fake.auth_url}/token", data=code) as resp:
            assert resp.status == 400 and "public" in (await resp.json())["message"]


@pytest.mark.parametrize("outcome", ["access_denied", "expired_token"])
async def test_device_codes_can_be_denied_or_expire(http, outcome):
    async with FakeTwitch(device_outcome=outcome) as fake:
        async with http.post(f"{fake.auth_url}/device", data={"client_id": "abc"}) as resp:
            device = await resp.json()
        poll = {
            "client_id": "abc",
            "device_code": device["device_code"],
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        }
        async with http.post(f"{fake.auth_url}/token", data=poll) as resp:
            assert resp.status == 400 and (await resp.json())["message"] == outcome


async def test_authorize_can_answer_access_denied(http):
    async with FakeTwitch(authorize_outcome="access_denied") as fake:
        async with http.get(
            f"{fake.auth_url}/authorize",
            params={"client_id": "abc", "redirect_uri": "http://127.0.0.1:9/cb", "state": "s"},
            allow_redirects=False,
        ) as resp:
            query = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert query["error"] == ["access_denied"] and query["state"] == ["s"]


async def test_an_applied_request_whose_answer_is_lost_took_effect(http):
    async with FakeTwitch() as fake:
        ws, welcome = await connect(http, fake.ws_url)
        await control(
            http,
            fake,
            "fail",
            {"path": "/helix/eventsub/subscriptions", "status": 503, "applied": True},
        )
        status, _ = await subscribe(http, fake, session_id(welcome))
        assert status == 503
        status, body = await subscribe(http, fake, session_id(welcome))
        assert status == 409  # the first one exists
        await ws.close()


async def test_subscription_list_pages_and_refuses_two_filters(http):
    async with FakeTwitch() as fake:
        ws, welcome = await connect(http, fake.ws_url)
        for sub_type in ("channel.follow", "stream.online", "stream.offline"):
            assert (await subscribe(http, fake, session_id(welcome), sub_type))[0] == 202
        url = f"{fake.api_url}/eventsub/subscriptions"
        async with http.get(url, params={"first": "2"}, headers=helix_headers(fake)) as resp:
            first = await resp.json()
        assert len(first["data"]) == 2 and first["pagination"]["cursor"] and first["total"] == 3
        both = {"status": "enabled", "type": "stream.online"}
        async with http.get(url, params=both, headers=helix_headers(fake)) as resp:
            assert resp.status == 400
        await ws.close()


async def test_a_dead_socket_leaves_its_subscriptions_with_twitchs_reason(http):
    async with FakeTwitch(ping_interval=0.3) as fake:
        ws = await http.ws_connect(fake.ws_url, autoping=False)
        welcome = await next_frame(ws)
        await subscribe(http, fake, session_id(welcome))
        while (await asyncio.wait_for(ws.receive(), 3)).type is not aiohttp.WSMsgType.CLOSE:
            pass  # pings we leave unanswered
        assert ws.close_code == 4002
        async with http.get(
            f"{fake.api_url}/eventsub/subscriptions", headers=helix_headers(fake)
        ) as resp:
            statuses = [s["status"] for s in (await resp.json())["data"]]
        assert statuses == ["websocket_failed_ping_pong"]


async def test_chaos_resends_reorders_and_stales_with_a_seed(http):
    async with FakeTwitch(
        chaos_duplicates=0.5, chaos_reorder=4, chaos_stale=0.5, chaos_seed=3
    ) as fake:
        ws, welcome = await connect(http, fake.ws_url)
        await subscribe(http, fake, session_id(welcome))
        events = [
            {"subscription_type": "channel.follow", "event": sample_event("channel.follow")[1]}
            for _ in range(20)
        ]
        sent = await control(http, fake, "events", {"events": events})
        frames = [await next_frame(ws) for _ in range(sent["delivered"])]
        ids = [f["metadata"]["message_id"] for f in frames]
        assert len(ids) > len(set(ids)) == 20  # resent with the same message_id
        firsts = list(dict.fromkeys(ids))
        assert firsts != sorted(firsts)  # ids count up in the order the events were sent
        stamps = [f["metadata"]["message_timestamp"] for f in frames]
        assert min(stamps) < time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 600))
        await ws.close()


async def test_eventsub_limit_429_keeps_points_and_buckets_are_per_user(http):
    async with FakeTwitch(ratelimit_limit=2) as fake:
        other = (await control(http, fake, "token", {"user_id": "2000"}))["access_token"]
        await control(
            http,
            fake,
            "fail",
            {"path": "/helix/eventsub/subscriptions", "status": 429, "eventsub_limit": True},
        )
        async with http.get(
            f"{fake.api_url}/eventsub/subscriptions", headers=helix_headers(fake)
        ) as resp:
            assert resp.status == 429 and int(resp.headers["Ratelimit-Remaining"]) > 0
        for _ in range(3):
            async with http.get(f"{fake.api_url}/users", headers=helix_headers(fake)) as resp:
                last = resp.status
        assert last == 429  # user 1000's bucket is empty…
        async with http.get(f"{fake.api_url}/users", headers=helix_headers(fake, other)) as resp:
            assert resp.status == 200  # …user 2000's is not


async def test_channel_tags_follow_twitchs_rules(http):
    async with FakeTwitch() as fake:
        for tags, status in ((["English", "Speedrun"], 204), (["two words"], 400), (["c++"], 400)):
            async with http.patch(
                f"{fake.api_url}/channels",
                params={"broadcaster_id": "1000"},
                json={"tags": tags},
                headers=helix_headers(fake),
            ) as resp:
                assert resp.status == status, tags


async def test_helix_keeps_polls_predictions_and_archives(http):
    async with FakeTwitch() as fake:
        await control(http, fake, "live", {"live": True})
        await control(http, fake, "live", {"live": False})
        await control(http, fake, "history", {"polls": [{"id": "p1", "status": "COMPLETED"}]})
        headers = helix_headers(fake)
        async with http.get(
            f"{fake.api_url}/videos", params={"user_id": "1000", "type": "archive"}, headers=headers
        ) as resp:
            videos = (await resp.json())["data"]
        assert len(videos) == 1 and videos[0]["stream_id"] and videos[0]["duration"].endswith("s")
        async with http.get(
            f"{fake.api_url}/polls", params={"broadcaster_id": "1000"}, headers=headers
        ) as resp:
            assert [p["id"] for p in (await resp.json())["data"]] == ["p1"]
        async with http.get(
            f"{fake.api_url}/channels", params={"broadcaster_id": "1000"}, headers=headers
        ) as resp:
            assert (await resp.json())["data"][0]["title"]
