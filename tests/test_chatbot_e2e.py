"""The chat bot end to end: the daemon as a process, the fake Twitch's chat, the JSON API."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from test_eventsub import wait_until
from test_twitch_e2e import _store_channel

from streamerhub.bot.subscriptions import SUBSCRIPTIONS
from streamerhub.fake_twitch import FakeTwitch, delivery, sample_event
from streamerhub.fake_twitch.chat import room
from streamerhub.web.auth import api_token

pytestmark = pytest.mark.e2e


def fake_env(fake: FakeTwitch, db_url: str) -> dict[str, str]:
    return {
        "STREAMERHUB_DATABASE_URL": db_url,
        "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
        "STREAMERHUB_TWITCH_API_URL": fake.api_url,
        "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
        "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
    }


async def start_daemon(
    daemon_factory, db_url: str, fake: FakeTwitch, env: dict[str, str] | None = None
) -> Any:
    daemon = daemon_factory(env={**fake_env(fake, db_url), **(env or {})})
    daemon.data_dir.mkdir(parents=True)
    await _store_channel(db_url, daemon.data_dir, fake)
    await asyncio.to_thread(daemon.start)

    def subscribed() -> bool:
        return any(
            len(fake.state.session_subscriptions(s.id)) == len(SUBSCRIPTIONS) + 1
            for s in fake.state.sessions.values()
        )

    await wait_until(subscribed, 20, "daemon subscribed on the fake")
    return daemon


class Api:
    def __init__(self, http: aiohttp.ClientSession, daemon: Any) -> None:
        self.http, self.base = http, f"{daemon.url}/api/v1/chatbot"
        self.headers = {"Authorization": f"Bearer {api_token(daemon.data_dir)}"}

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.http.request(
            method, self.base + path, json=body, headers=self.headers
        ) as resp:
            answer = await resp.json()
            assert resp.status == status, answer
            return answer

    async def log_has(self, **wanted: Any) -> bool:
        entries = await self.call("GET", "/log?limit=200")
        return any(all(e.get(k) == v for k, v in wanted.items()) for e in entries)


def sent_texts(fake: FakeTwitch) -> list[str]:
    return [m["message"] for m in room(fake.state).sent]


async def chat(http: aiohttp.ClientSession, fake: FakeTwitch, text: str, **who: Any) -> None:
    async with http.post(f"{fake.url}/_fake/chat", json={"text": text, **who}) as resp:
        assert (await resp.json())["delivered"] == 1


async def test_commands_events_and_refusals_through_the_daemon(daemon_factory, db_url: str) -> None:
    async with FakeTwitch() as fake, aiohttp.ClientSession() as http:
        daemon = await start_daemon(daemon_factory, db_url, fake)
        try:
            await _scenario(http, fake, daemon, db_url)
        except BaseException:
            print(daemon.log()[-6000:])  # what the daemon said, for the failure report
            raise


async def _scenario(
    http: aiohttp.ClientSession, fake: FakeTwitch, daemon: Any, db_url: str
) -> None:
    api = Api(http, daemon)
    # Off until the owner turns it on: a new install never speaks in chat unasked.
    await chat(http, fake, "!commands")
    await api.call("PUT", "/channels/1000", {"enabled": True})
    await api.call(
        "POST",
        "/commands",
        {"name": "hello", "response": "Hi {user}! #{count}", "cooldown_s": 0},
        201,
    )
    await api.call(
        "POST",
        "/commands",
        {"name": "ban", "response": "Bye {args}", "permission": "moderator"},
        201,
    )
    await api.call("POST", "/commands", {"name": "Not valid!", "response": "x"}, 400)

    # a viewer's command is answered in chat (and Twitch's echo is not answered again)
    await chat(http, fake, "!hello", user_name="Cool_Viewer")
    await wait_until(lambda: "Hi Cool_Viewer! #1" in sent_texts(fake), 10, "reply in chat")
    await wait_until(lambda: api.log_has(source="!hello", outcome="sent"), 5, "sent logged")
    assert not [t for t in sent_texts(fake) if t.startswith("Commands:")]  # said while off

    # the same viewer again at once: their own cooldown (15 s by default) holds it back
    await chat(http, fake, "!hello", user_name="Cool_Viewer")

    async def held_back() -> bool:
        entries = await api.call("GET", "/log")
        return any(str(e["reason"]).startswith("user cooldown: !hello again in") for e in entries)

    await wait_until(held_back, 5, "user cooldown logged")

    # permission: a viewer may not, a moderator may
    await chat(http, fake, "!ban troll", user_id="5002")
    await wait_until(
        lambda: api.log_has(
            source="!ban", outcome="skipped", reason="permission: !ban is for moderators and up"
        ),
        5,
        "permission refusal logged",
    )
    await chat(http, fake, "!ban troll", user_id="6000", badges=["moderator"])
    await wait_until(lambda: "Bye troll" in sent_texts(fake), 10, "moderator's command")

    # Twitch refuses a send: logged with its drop reason
    async with http.post(f"{fake.url}/_fake/chat/drop", json={"code": "msg_rejected"}):
        pass
    await chat(http, fake, "!hello", user_id="5003")
    await wait_until(
        lambda: api.log_has(outcome="refused", text="Hi User5003! #2"), 10, "refusal logged"
    )
    entries = await api.call("GET", "/log")
    refused = next(e for e in entries if e["outcome"] == "refused")
    assert refused["reason"].startswith("Twitch dropped it: msg_rejected")

    # a gift bomb: one thank-you; raids beyond the rate limit: skipped
    await api.call("PUT", "/events/raid", {"template": "Raid by {user}!", "per_minute": 1})
    _, gift = sample_event("channel.subscription.gift", total=20, user_name="Santa")
    items = [{"subscription_type": "channel.subscription.gift", "event": gift}]
    for i in range(20):
        _, sub = sample_event("channel.subscribe", is_gift=True, user_name=f"lucky{i}")
        items.append({"subscription_type": "channel.subscribe", "event": sub})
    for i in range(3):
        _, raid = sample_event("channel.raid", from_broadcaster_user_name=f"Raider{i}")
        items.append({"subscription_type": "channel.raid", "event": raid})
    await delivery.deliver(fake.state, items)
    await wait_until(
        lambda: "Santa gifted 20 subs, thank you!" in sent_texts(fake), 10, "gift thank-you"
    )
    await wait_until(
        lambda: api.log_has(reason="rate limit: at most 1 raid messages a minute"), 5, "raids"
    )
    texts = sent_texts(fake)
    assert sum("gifted" in t or "subscribed" in t for t in texts) == 1
    assert [t for t in texts if t.startswith("Raid by")] == ["Raid by Raider0!"]

    # capture was not touched: every notification is stored
    conn = await asyncpg.connect(db_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM twitch_events WHERE subscription_type <> 'channel.chat.message'"
        )
    finally:
        await conn.close()
    assert stored == len(items)

    exported = await api.call("GET", "/export")
    assert [c["name"] for c in exported["commands"]] == ["ban", "hello"]
    assert exported["commands"][1]["uses"] == 2

    daemon.signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait, 30) == 0
    assert "Traceback" not in daemon.log()
    assert fake.state.default_token.access_token not in daemon.log()
