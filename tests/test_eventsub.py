"""The EventSub client against the fake Twitch over real sockets, storing into real PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
from conftest import make_settings
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streamerhub.bot.channel import missed_since_last_run
from streamerhub.bot.eventsub import State
from streamerhub.bot.oauth import Grant
from streamerhub.bot.ownership import LOCK_SPACE
from streamerhub.bot.service import SYNC_EVERY, BotDeps, TwitchBot
from streamerhub.bot.subscriptions import SUBSCRIPTIONS
from streamerhub.bot.tokens import TokenStore
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.events.store import EventStore
from streamerhub.fake_twitch import FakeTwitch, sample_event

EVERY_TYPE = [t for t, _, _ in SUBSCRIPTIONS]


@dataclass
class Rig:
    """A fake Twitch, the real store on a fresh database, and the bot wired to both."""

    fake: FakeTwitch
    db: Database
    store: EventStore
    keyring: Keyring
    http: aiohttp.ClientSession
    tmp: Path
    bots: list[TwitchBot] = field(default_factory=list)
    tokens: dict[str, dict] = field(default_factory=dict)

    async def control(self, name: str, body: dict | None = None) -> Any:
        method = "GET" if name == "state" else "POST"
        # A file-like body: aiohttp warns about (and blocks on) raw bodies over 1 MB.
        data = io.BytesIO(json.dumps(body or {}).encode()) if method == "POST" else None
        async with self.http.request(
            method,
            f"{self.fake.url}/_fake/{name}",
            data=data,
            headers={"Content-Type": "application/json"},
        ) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
            return answer

    async def connect(self, user_id: str = "1000", scopes: list[str] | None = None) -> dict:
        """Mint a token on the fake for user_id and store it as a connected channel."""
        body: dict[str, Any] = {"user_id": user_id}
        if scopes is not None:
            body["scopes"] = scopes
        grant = await self.control("token", body)
        await TokenStore(self.db, self.keyring).save_login(
            user_id,
            f"user{user_id}",
            f"User{user_id}",
            Grant(
                grant["access_token"],
                grant["refresh_token"],
                grant["expires_in"],
                tuple(grant.get("scope") or ()),
            ),
        )
        self.tokens[user_id] = grant
        return grant

    async def start_bot(self) -> TwitchBot:
        settings = make_settings(
            self.tmp,
            **{
                "STREAMERHUB_TWITCH_CLIENT_ID": self.fake.client_id,
                "STREAMERHUB_TWITCH_API_URL": self.fake.api_url,
                "STREAMERHUB_TWITCH_AUTH_URL": self.fake.auth_url,
                "STREAMERHUB_TWITCH_EVENTSUB_URL": self.fake.ws_url,
            },
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        bot = TwitchBot(BotDeps(settings, self.db, self.keyring, self.store))
        self.bots.append(bot)
        await bot.start()
        return bot

    async def wait_subscribed(
        self, bot: TwitchBot, channel_id: str = "1000", timeout: float = 15
    ) -> None:
        def ready() -> bool:
            runner = bot.runners.get(channel_id)
            client = runner.client if runner else None
            return bool(client and client.stats.state is State.CONNECTED)

        await wait_until(ready, timeout, f"channel {channel_id} never subscribed")

    async def deliver(self, *items: tuple[str, dict] | dict) -> list[str]:
        events = [
            item if isinstance(item, dict) else {"subscription_type": item[0], "event": item[1]}
            for item in items
        ]
        answer = await self.control("events", {"events": events})
        return answer["message_ids"]

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.db.pool.acquire() as conn:
            return await conn.fetch(sql, *args)

    async def value(self, sql: str, *args: Any) -> Any:
        async with self.db.pool.acquire() as conn:
            return await conn.fetchval(sql, *args)


async def wait_until(check: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s: {what}")


@pytest.fixture
async def rig(db: Database, tmp_path: Path) -> AsyncIterator[Rig]:
    async with (
        FakeTwitch(keepalive_default=3, device_interval=1) as fake,
        aiohttp.ClientSession() as http,
    ):
        store = EventStore(db, tmp_path / "spool")
        (tmp_path / "spool").mkdir()
        await store.start()
        rig = Rig(fake, db, store, Keyring(AESGCM.generate_key(bit_length=256)), http, tmp_path)
        try:
            yield rig
        finally:
            for bot in rig.bots:
                await bot.stop()
            await store.stop()


# ----------------------------------------------------------------------------- tests

TYPED_TABLE = {
    "channel.follow": "twitch_follows",
    "channel.cheer": "twitch_cheers",
    "stream.online": "twitch_streams",
    "stream.offline": "twitch_streams",
    "channel.raid": "twitch_raids",
    "channel.update": "twitch_channel_updates",
    "channel.chat.message": "twitch_events",  # stored raw only (the chat bot reads it live)
}


def _table(sub_type: str) -> str:
    if sub_type in TYPED_TABLE:
        return TYPED_TABLE[sub_type]
    for prefix, table in (
        ("channel.subscri", "twitch_subscriptions"),
        ("channel.channel_points", "twitch_redemptions"),
        ("channel.hype_train", "twitch_hype_trains"),
        ("channel.poll", "twitch_polls"),
        ("channel.prediction", "twitch_predictions"),
        ("channel.goal", "twitch_goals"),
    ):
        if sub_type.startswith(prefix):
            return table
    raise KeyError(sub_type)


async def test_every_subscription_type_lands_in_its_typed_table(rig: Rig) -> None:
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    state = await rig.control("state")
    created = {
        (s["type"], s["version"], json.dumps(s["condition"], sort_keys=True))
        for s in state["subscriptions"]
        if s["status"] == "enabled"
    }
    assert len(created) == len(SUBSCRIPTIONS) + 1  # raids twice: received and sent
    assert ("channel.hype_train.begin", "2", json.dumps({"broadcaster_user_id": "1000"})) in created
    assert (
        "channel.follow",
        "2",
        json.dumps({"broadcaster_user_id": "1000", "moderator_user_id": "1000"}, sort_keys=True),
    ) in created

    items = [(t, sample_event(t)[1]) for t in EVERY_TYPE]
    items.append(
        (
            "channel.raid",
            sample_event(
                "channel.raid",
                from_broadcaster_user_id="1000",
                from_broadcaster_user_login="streamer",
                from_broadcaster_user_name="Streamer",
                to_broadcaster_user_id="77",
                to_broadcaster_user_login="friend",
                to_broadcaster_user_name="Friend",
            )[1],
        )
    )
    sent = await rig.deliver(*items)
    assert len(sent) == len(items)
    await wait_until(lambda: _count_is(rig, "twitch_events", len(items)), 10, "every event stored")
    for sub_type in set(EVERY_TYPE):
        expected = sum(1 for t, _ in items if t == sub_type)
        got = await rig.value(
            f"SELECT count(*) FROM {_table(sub_type)} t JOIN twitch_events e "
            "USING (message_id) WHERE e.subscription_type = $1",
            sub_type,
        )
        assert got == expected, sub_type
    raids = await rig.fetch("SELECT from_user_id, to_user_id FROM twitch_raids ORDER BY 1")
    assert [tuple(r) for r in raids] == [("1000", "77"), ("4242", "1000")]

    rows = await rig.fetch(
        "SELECT subscription_type, status FROM eventsub_subscriptions WHERE channel_id = '1000'"
    )
    assert {r["subscription_type"] for r in rows} == set(EVERY_TYPE)
    assert {r["status"] for r in rows} == {"enabled"}
    assert bot.status()[0]["subscriptions"]["enabled"] == len(SUBSCRIPTIONS) + 1


async def _count_is(rig: Rig, table: str, n: int) -> bool:
    return await rig.value(f"SELECT count(*) FROM {table}") == n


async def test_missing_scopes_recorded_and_revocations_kept(rig: Rig) -> None:
    await rig.connect(scopes=["moderator:read:followers", "bits:read"])
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    rows = {
        r["subscription_type"]: (r["status"], r["detail"])
        for r in await rig.fetch(
            "SELECT subscription_type, status, detail FROM eventsub_subscriptions"
        )
    }
    assert rows["channel.follow"][0] == rows["channel.cheer"][0] == "enabled"
    assert rows["stream.online"][0] == rows["channel.raid"][0] == "enabled"
    assert rows["channel.subscribe"] == ("missing_scope", "needs channel:read:subscriptions")
    assert rows["channel.hype_train.begin"] == ("missing_scope", "needs channel:read:hype_train")

    await rig.control(
        "revoke", {"subscription_type": "channel.cheer", "status": "authorization_revoked"}
    )

    async def revoked() -> bool:
        status = await rig.value(
            "SELECT status FROM eventsub_subscriptions WHERE subscription_type = 'channel.cheer'"
        )
        return status == "revoked:authorization_revoked"

    await wait_until(revoked, 5, "revocation recorded")
    summary = bot.status()[0]["subscriptions"]
    assert summary["revoked"] == ["channel.cheer"]
    assert "channel.subscribe" in summary["missing_scope"]
    # The connection carries on: other types still arrive.
    await rig.deliver(("channel.follow", sample_event("channel.follow")[1]))
    await wait_until(lambda: _count_is(rig, "twitch_follows", 1), 5, "follow stored")
    assert bot.runners["1000"].client.stats.connections == 1


def _flood(n: int, prefix: str) -> list[dict]:
    events = []
    for i in range(n):
        _, event = sample_event("channel.cheer", bits=i + 1, message=f"{prefix}{i}")
        events.append({"subscription_type": "channel.cheer", "event": event})
    return events


async def _burst(rig: Rig, total: int, disrupt: Callable[[], Any], batch: int = 250) -> list[str]:
    """Deliver `total` events in batches; run `disrupt` in the middle; return ids sent."""
    sent: list[str] = []
    for i in range(0, total, batch):
        if i == total // 2:
            await disrupt()
        sent += (await rig.control("events", {"events": _flood(batch, f"b{i}-")}))["message_ids"]
        await asyncio.sleep(0)  # let the reader breathe between posts, as Twitch would
    return sent


async def _stored_ids(rig: Rig) -> list[str]:
    await rig.store.drain()
    return [r["message_id"] for r in await rig.fetch("SELECT message_id FROM twitch_events")]


async def test_burst_with_session_reconnect_loses_and_duplicates_nothing(rig: Rig) -> None:
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    client = bot.runners["1000"].client

    async def reconnect() -> None:
        await rig.control("reconnect")

    sent = await _burst(rig, 5000, reconnect)
    assert len(sent) == 5000, "the fake dropped events: a subscription was missing"
    await wait_until(lambda: client.stats.notifications >= 5000, 20, "all frames read")
    stored = await _stored_ids(rig)
    assert len(stored) == len(set(stored)) == 5000
    assert set(stored) == set(sent)
    assert client.stats.reconnects == 1 and client.stats.gaps == 0
    assert await rig.value("SELECT count(*) FROM eventsub_gaps") == 0
    state = await rig.control("state")
    assert len(state["sessions"]) == 1 and state["sessions"][0]["id"] == client.stats.session_id
    assert state["closed_sessions"][-1]["close_code"] not in (4004,)  # we closed the old one


async def test_burst_with_forced_close_stores_everything_delivered(rig: Rig) -> None:
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    client = bot.runners["1000"].client

    async def close() -> None:
        await rig.control("close", {"code": 4000, "reason": "internal server error"})
        await wait_until(lambda: client.stats.gaps == 1, 5, "gap noticed")
        await rig.wait_subscribed(bot)

    sent = await _burst(rig, 5000, close)
    assert len(sent) == 5000  # resubscribed before the second half was sent
    await wait_until(lambda: client.stats.notifications >= len(sent), 20, "all frames read")
    stored = await _stored_ids(rig)
    assert len(stored) == len(set(stored)) and set(sent) <= set(stored)
    assert len(stored) == len(sent)
    gaps = await rig.fetch("SELECT reason, ended_at, backfilled_at FROM eventsub_gaps")
    assert len(gaps) == 1 and "4000" in gaps[0]["reason"]
    await wait_until(
        lambda: rig.value("SELECT backfilled_at IS NOT NULL FROM eventsub_gaps"),
        10,
        "gap backfilled",
    )


async def test_keepalive_stall_reconnects_records_gap_and_backfills(rig: Rig) -> None:
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    client = bot.runners["1000"].client
    _, before = sample_event("channel.follow", user_id="900", user_login="early", user_name="Early")
    await rig.deliver(("channel.follow", before))
    await wait_until(lambda: _count_is(rig, "twitch_follows", 1), 5, "live follow stored")

    await rig.control("keepalive", {"enabled": False})
    started = time.monotonic()
    await wait_until(lambda: client.stats.gaps == 1, 12, "stall detected")
    assert time.monotonic() - started < 3 + 3 + 1.5  # keepalive 3 s + slack 3 s
    # While we were deaf: someone followed and the stream went live (Helix knows, EventSub won't).
    follows = [
        {
            "user_id": "900",
            "user_login": "early",
            "user_name": "Early",
            "followed_at": before["followed_at"],
        },
        {
            "user_id": "901",
            "user_login": "missed",
            "user_name": "Missed",
            "followed_at": _now_iso(),
        },
    ]
    await rig.control("followers", {"followers": follows})
    await rig.control("live", {"live": True, "title": "back"})
    await rig.control("keepalive", {"enabled": True})
    await rig.wait_subscribed(bot)

    async def backfilled() -> Any:
        return await rig.value(
            "SELECT backfilled FROM eventsub_gaps WHERE backfilled_at IS NOT NULL"
        )

    assert await wait_until(backfilled, 10, "gap backfilled") == 2
    gap = (await rig.fetch("SELECT * FROM eventsub_gaps"))[0]
    assert "no frame for" in gap["reason"] and gap["ended_at"] > gap["started_at"]
    rows = await rig.fetch("SELECT user_id, backfilled FROM twitch_follows ORDER BY user_id")
    assert [tuple(r) for r in rows] == [("900", False), ("901", True)]
    stream = await rig.fetch(
        "SELECT kind, e.backfilled FROM twitch_streams JOIN twitch_events e USING (message_id)"
    )
    assert [tuple(r) for r in stream] == [("online", True)]
    assert bot.status()[0]["last_gap"]["reason"].startswith("no frame for")


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def test_bad_frames_become_dead_letters_and_the_connection_carries_on(rig: Rig) -> None:
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    client = bot.runners["1000"].client
    _, event = sample_event("channel.follow")
    sub = {
        "id": str(uuid.uuid4()),
        "status": "enabled",
        "type": "channel.follow",
        "version": "2",
        "cost": 0,
        "condition": {"broadcaster_user_id": "1000"},
        "transport": {"method": "websocket", "session_id": client.stats.session_id},
        "created_at": _now_iso(),
    }

    def frame(message_type: str, sub_type: str | None = None, payload: Any = None) -> str:
        meta = {
            "message_id": str(uuid.uuid4()),
            "message_type": message_type,
            "message_timestamp": _now_iso(),
        }
        if sub_type:
            meta |= {"subscription_type": sub_type, "subscription_version": "1"}
        return json.dumps({"metadata": meta, "payload": payload or {}})

    bad = {
        "not JSON": "{definitely not json",
        "no metadata": json.dumps({"payload": {}}),
        "unknown message_type": frame("session_party"),
        "unknown subscription type": frame(
            "notification", "channel.never_heard_of", {"subscription": sub, "event": event}
        ),
        "frame too large": frame("session_keepalive", payload={"pad": "x" * (1024 * 1024)}),
        # Ours are known by id or by naming our session; this one names another session.
        "subscription id we never created": frame(
            "notification",
            "channel.follow",
            {
                "subscription": sub | {"transport": {"method": "websocket", "session_id": "x"}},
                "event": event,
            },
        ),
    }
    for text in bad.values():
        assert (await rig.control("raw", {"text": text}))["sent"] == 1
    await rig.deliver(("channel.follow", sample_event("channel.follow")[1]))
    await wait_until(lambda: _count_is(rig, "twitch_follows", 1), 5, "good event after bad ones")
    await rig.store.drain()
    letters = await rig.fetch("SELECT reason, raw, source FROM dead_letters ORDER BY id")
    assert len(letters) == len(bad)
    for (what, text), letter in zip(bad.items(), letters):
        assert what.split()[0].lower() in letter["reason"].lower(), (what, letter["reason"])
        assert letter["source"] == "eventsub"
        assert letter["raw"] == text or "truncated" in letter["reason"]
    assert client.stats.connections == 1 and client.stats.bad_frames == len(bad)
    assert bot.status()[0]["state"] == "connected"


async def test_restart_deletes_stale_subscriptions_and_backfills_the_downtime(rig: Rig) -> None:
    await rig.connect()
    first = await rig.start_bot()
    await rig.wait_subscribed(first)
    await first.stop()
    state = await rig.control("state")
    assert state["subscriptions"] and all(
        s["status"] == "websocket_disconnected" for s in state["subscriptions"]
    )
    # While the daemon was down, someone followed.
    await rig.control(
        "followers",
        {
            "followers": [
                {
                    "user_id": "950",
                    "user_login": "offhours",
                    "user_name": "OffHours",
                    "followed_at": _now_iso(),
                }
            ]
        },
    )
    second = await rig.start_bot()
    await rig.wait_subscribed(second)
    state = await rig.control("state")
    session = second.runners["1000"].client.stats.session_id
    assert {s["transport"]["session_id"] for s in state["subscriptions"]} == {session}
    assert len(state["subscriptions"]) == len(SUBSCRIPTIONS) + 1

    async def backfilled() -> Any:
        return await rig.fetch(
            "SELECT reason, ended_at, backfilled FROM eventsub_gaps WHERE backfilled_at IS NOT NULL"
        )

    gaps = await wait_until(backfilled, 10, "downtime backfilled")
    assert [(g["reason"], g["backfilled"]) for g in gaps] == [("daemon stopped", 1)]
    assert await rig.value("SELECT backfilled FROM twitch_follows WHERE user_id = '950'") is True


async def test_after_a_crash_the_gap_starts_at_the_last_event_received(rig: Rig) -> None:
    await rig.connect()
    async with rig.db.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO twitch_events (message_id, subscription_type, subscription_version, "
            "channel_id, occurred_at, received_at, payload) VALUES ('m1', 'channel.cheer', '1', "
            "'1000', now() - interval '1 minute', now() - interval '1 minute', '{}')"
        )
    gap = await missed_since_last_run(rig.db, rig.store, "1000")
    assert gap is not None and "without notice" in gap.reason
    await rig.store.drain()
    row = (await rig.fetch("SELECT started_at, ended_at FROM eventsub_gaps"))[0]
    assert row["started_at"] == gap.started_at and row["ended_at"] is None
    assert await missed_since_last_run(rig.db, rig.store, "2000") is None  # never captured


async def test_a_channel_connected_or_disconnected_elsewhere_is_picked_up_at_once(rig: Rig) -> None:
    bot = await rig.start_bot()
    assert bot.status() == []
    # As `streamerhub twitch login` in another process does: only the row, no call to the bot.
    started = time.monotonic()
    await rig.connect()
    await rig.wait_subscribed(bot, timeout=SYNC_EVERY / 3)
    assert time.monotonic() - started < SYNC_EVERY / 3
    await TokenStore(rig.db, rig.keyring).disconnect("1000", "disconnected on the dashboard")
    await wait_until(lambda: "1000" not in bot.runners, SYNC_EVERY / 3, "channel stopped")
    assert not (await rig.control("state"))["sessions"], "the socket was left open"


LOCKS = """
SELECT array_agg(pid) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) FROM pg_locks
 WHERE locktype = 'advisory'
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


async def _lock_holders(rig: Rig) -> list[int]:
    return (await rig.fetch(LOCKS))[0][0] or []


async def _lock_waiters(rig: Rig) -> int:
    return (await rig.fetch(LOCKS))[0][1]


async def test_a_lost_lock_connection_is_replaced_and_a_taken_channel_handed_over(rig: Rig) -> None:
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    runner = bot.runners["1000"]
    [first] = await _lock_holders(rig)
    await rig.value("SELECT pg_terminate_backend($1, 5000)", first)

    async def retaken() -> bool:
        holders = await _lock_holders(rig)
        return bool(holders) and first not in holders

    await wait_until(retaken, 5, "channel lock taken again on a new connection")
    assert bot.runners["1000"] is runner and runner.client.stats.connections == 1
    assert bot.status()[0]["state"] == "connected"

    # Another daemon waits for the lock, so it wins it when our connection dies: the channel is
    # its now, without a gap on our side.
    [second] = await _lock_holders(rig)
    async with rig.db.pool.acquire() as other:
        waiting = asyncio.ensure_future(
            other.fetchval("SELECT pg_advisory_lock(hashtextextended($1, 0))", LOCK_SPACE + "1000")
        )
        await wait_until(lambda: _lock_waiters(rig), 5, "the other daemon queued for the lock")
        await rig.value("SELECT pg_terminate_backend($1, 5000)", second)
        await asyncio.wait_for(waiting, 5)
        await wait_until(lambda: "1000" not in bot.runners, 5, "channel handed over")
        assert not (await rig.control("state"))["sessions"], "both daemons would be connected"
        assert await rig.value("SELECT count(*) FROM eventsub_gaps") == 0
        await bot.sync()
        assert "1000" not in bot.runners
    await bot.sync()  # the other daemon let go
    await rig.wait_subscribed(bot)
