"""The fake Twitch's chat: Send Chat Message with Twitch's rules, echoed to chat subscribers."""

from __future__ import annotations

import time

import aiohttp
import pytest
from test_fake_twitch import connect, helix_headers, next_frame

from streamerhub.bot.chat import BotChatSender, Runners
from streamerhub.bot.helix import Helix
from streamerhub.fake_twitch import FakeTwitch
from streamerhub.fake_twitch.chat import room


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def send(http, fake: FakeTwitch, body: dict, token: str | None = None) -> tuple[int, dict]:
    async with http.post(
        f"{fake.api_url}/chat/messages", json=body, headers=helix_headers(fake, token)
    ) as resp:
        return resp.status, await resp.json()


def said(text: str, sender: str = "1000") -> dict:
    return {"broadcaster_id": "1000", "sender_id": sender, "message": text}


async def test_a_sent_message_is_echoed_to_chat_subscribers(http) -> None:
    async with FakeTwitch() as fake:
        ws, welcome = await connect(http, fake.ws_url)
        body = {
            "type": "channel.chat.message",
            "version": "1",
            "condition": {"broadcaster_user_id": "1000", "user_id": "1000"},
            "transport": {"method": "websocket", "session_id": welcome["payload"]["session"]["id"]},
        }
        async with http.post(
            f"{fake.api_url}/eventsub/subscriptions", json=body, headers=helix_headers(fake)
        ) as resp:
            assert resp.status == 202, await resp.text()
        status, answer = await send(http, fake, said("Hello chat"))
        assert status == 200 and answer["data"][0]["is_sent"] is True
        frame = await next_frame(ws)
        event = frame["payload"]["event"]
        assert event["message"]["text"] == "Hello chat"
        assert event["chatter_user_id"] == "1000"
        assert {"set_id": "broadcaster", "id": "1", "info": ""} in event["badges"]
        async with http.post(
            f"{fake.url}/_fake/chat", json={"text": "!hi", "badges": ["vip"]}
        ) as resp:
            assert (await resp.json())["delivered"] == 1
        event = (await next_frame(ws))["payload"]["event"]
        assert event["chatter_user_login"] == "cool_viewer" or event["chatter_user_id"] == "5001"
        assert event["badges"][0]["set_id"] == "vip"
        await ws.close()


async def test_send_rules_scope_sender_length_and_drop_knob(http) -> None:
    async with FakeTwitch() as fake:
        reader = fake.state.issue_token("1000", ["user:read:chat"]).access_token
        status, answer = await send(http, fake, said("hi"), reader)
        assert (status, answer["message"]) == (401, "Missing scope: user:write:chat")
        status, answer = await send(http, fake, said("hi", sender="2000"))
        assert status == 401 and "sender_id" in answer["message"]
        status, answer = await send(http, fake, {"broadcaster_id": "1000", "sender_id": "1000"})
        assert (status, answer["message"]) == (400, "Missing required parameter: message")
        status, _ = await send(http, fake, said("x" * 501))
        assert status == 422
        async with http.post(f"{fake.url}/_fake/chat/drop", json={"code": "msg_banned"}) as resp:
            assert resp.status == 200
        status, answer = await send(http, fake, said("dropped"))
        assert status == 200
        assert answer["data"][0]["is_sent"] is False
        assert answer["data"][0]["drop_reason"]["code"] == "msg_banned"
        async with http.get(f"{fake.url}/_fake/chat/sent") as resp:
            assert (await resp.json())["sent"] == []


async def test_app_token_path_duplicates_and_rate_limit_of_a_plain_bot(http) -> None:
    async with FakeTwitch() as fake:
        fake.state.add_user("7000", "helper_bot", "Helper_Bot")
        app = fake.state.issue_app_token(fake.client_id).access_token
        body = said("beep", sender="7000")
        status, answer = await send(http, fake, body, app)
        assert status == 401 and "user:bot" in answer["message"]
        fake.state.issue_token("7000", ["user:bot", "user:write:chat"])
        status, answer = await send(http, fake, body, app)
        assert status == 403  # the broadcaster has not granted channel:bot, not a moderator
        fake.state.issue_token("1000", ["channel:bot"])
        assert (await send(http, fake, body, app))[1]["data"][0]["is_sent"] is True
        answer = (await send(http, fake, body, app))[1]["data"][0]
        assert (answer["is_sent"], answer["drop_reason"]["code"]) == (False, "msg_duplicate")
        for i in range(18):
            assert (await send(http, fake, said(f"m{i}", sender="7000"), app))[0] == 200
        status, _ = await send(http, fake, said("one too many", sender="7000"), app)
        assert status == 429  # 20 per 30 s for a bot that is not a moderator
        room(fake.state).moderators["1000"] = {"7000"}
        assert (await send(http, fake, said("as a mod", sender="7000"), app))[0] == 200


class StaticToken:
    channel_id = "1000"

    def __init__(self, access: str) -> None:
        self.access = access

    def access_token(self) -> str:
        return self.access

    async def refresh(self, stale: str) -> str:
        return self.access


class OneChannel(Runners):
    def __init__(self, helix: Helix, scopes: frozenset[str]) -> None:
        self._helix, self._scopes = helix, scopes

    def helix(self, channel_id: str) -> Helix | None:
        return self._helix if channel_id == "1000" else None

    def scopes(self, channel_id: str) -> frozenset[str]:
        return self._scopes


async def test_the_bots_sender_reports_what_twitch_answered(http) -> None:
    async with FakeTwitch() as fake:
        helix = Helix(http, fake.api_url, fake.client_id, StaticToken(fake.token))
        sender = BotChatSender(OneChannel(helix, frozenset({"user:write:chat"})))
        assert (await sender.send("1000", "hello")).sent is True
        assert room(fake.state).sent[-1]["message"] == "hello"
        assert (await sender.send("2000", "hi")).reason == (
            "the channel is not connected in this daemon"
        )
        no_scope = BotChatSender(OneChannel(helix, frozenset()))
        assert "lacks user:write:chat" in str((await no_scope.send("1000", "hi")).reason)
        await http.post(f"{fake.url}/_fake/chat/drop", json={"code": "msg_banned"})
        answer = await sender.send("1000", "dropped")
        assert (answer.sent, answer.reason) == (
            False,
            "Twitch dropped it: msg_banned: Your message is being checked by mods and has not "
            "been sent.",
        )
        # Twitch failing: one retry at most, so the outbox is not held for long, and no repeat
        await http.post(
            f"{fake.url}/_fake/fail",
            json={"path": "/helix/chat/messages", "status": 500, "count": 5},
        )
        started = time.monotonic()
        answer = await sender.send("1000", "during an outage")
        assert answer.sent is False and "gave up after 2 attempts" in str(answer.reason)
        assert time.monotonic() - started < 3
