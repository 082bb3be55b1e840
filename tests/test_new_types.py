"""The newer EventSub types (issue 13): Bits use, automatic rewards, chat, ad breaks, shoutouts,
charity and shared chat, from Twitch's documented payloads to the rows, lines and exports a
streamer sees; a channel missing their scopes; chat text retention."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from test_eventsub import Rig, rig, wait_until
from test_twitch_e2e import _cli

from streamerhub.analytics.export import export_events
from streamerhub.analytics.periods import Calendar
from streamerhub.bot.oauth import LOGIN_SCOPES
from streamerhub.bot.subscriptions import SUBSCRIPTIONS, build_plan
from streamerhub.commands.twitch import render_status
from streamerhub.db import Database
from streamerhub.events.frames import parse_frame
from streamerhub.events.normalise import BadEvent, normalise
from streamerhub.events.retention import chat_retention, prune_chat_text
from streamerhub.events.store import EventStore
from streamerhub.events.text import describe, event_json, group_of, who
from streamerhub.fake_twitch import FakeTwitch, delivery, sample_event

NEW_TYPES = [
    "channel.bits.use",
    "channel.channel_points_automatic_reward_redemption.add",
    "channel.chat.message",
    "channel.chat.notification",
    "channel.ad_break.begin",
    "channel.shoutout.create",
    "channel.shoutout.receive",
    "channel.charity_campaign.donate",
    "channel.charity_campaign.start",
    "channel.charity_campaign.progress",
    "channel.charity_campaign.stop",
    "channel.shared_chat.begin",
    "channel.shared_chat.update",
    "channel.shared_chat.end",
]
CONDITION = {wanted.type: dict(wanted.condition) for wanted in build_plan("1000")}
NOW = datetime.now(timezone.utc)


def frame(sub_type: str, frame_id: str, at: datetime = NOW, **overrides: Any) -> str:
    """A notification frame of the fake's sample event, as Twitch sends it on the socket."""
    version, event = sample_event(sub_type, **overrides)
    subscription = {
        "id": f"sub-{sub_type}",
        "status": "enabled",
        "type": sub_type,
        "version": version,
        "cost": 0,
        "condition": CONDITION[sub_type],
        "transport": {"method": "websocket", "session_id": "AQoQ"},
        "created_at": "2026-03-01T19:00:00Z",
    }
    meta = {
        "message_id": frame_id,
        "message_type": "notification",
        "message_timestamp": at.isoformat().replace("+00:00", "Z"),
        "subscription_type": sub_type,
        "subscription_version": version,
    }
    return json.dumps({"metadata": meta, "payload": {"subscription": subscription, "event": event}})


async def store_frames(db: Database, folder: Path, *frames: str) -> EventStore:
    async with EventStore(db, folder) as store:
        for text in frames:
            store.submit(parse_frame(text))
        await store.drain()
    return store


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with db.pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch(sql, *args)]


def test_the_plan_asks_twitch_for_each_type_with_its_version_scope_and_condition() -> None:
    wanted = {(t, v, s) for t, v, s in SUBSCRIPTIONS}
    assert ("channel.bits.use", "1", "bits:read") in wanted
    assert (
        "channel.channel_points_automatic_reward_redemption.add",
        "2",
        "channel:read:redemptions",
    ) in wanted
    assert ("channel.chat.message", "1", "user:read:chat") in wanted
    assert ("channel.ad_break.begin", "1", "channel:read:ads") in wanted
    assert ("channel.charity_campaign.donate", "1", "channel:read:charity") in wanted
    assert ("channel.shared_chat.begin", "1", None) in wanted
    assert CONDITION["channel.chat.message"] == {"broadcaster_user_id": "1000", "user_id": "1000"}
    assert CONDITION["channel.ad_break.begin"] == {"broadcaster_id": "1000"}
    assert CONDITION["channel.shoutout.receive"] == {
        "broadcaster_user_id": "1000",
        "moderator_user_id": "1000",
    }
    # The login asks for every scope these need, so a new connection captures them all.
    assert {s for _, _, s in SUBSCRIPTIONS if s} <= set(LOGIN_SCOPES)


async def test_each_new_type_is_stored_raw_and_typed_with_what_a_user_sees(
    db: Database, tmp_path: Path
) -> None:
    store = await store_frames(db, tmp_path, *(frame(t, f"m-{t}") for t in NEW_TYPES))
    assert store.counters.stored == len(NEW_TYPES) and store.counters.dead_letters == 0
    raw = await rows(db, "SELECT subscription_type, channel_id FROM twitch_events")
    assert sorted(r["subscription_type"] for r in raw) == sorted(NEW_TYPES)
    assert {r["channel_id"] for r in raw} == {"1000"}  # charity names it broadcaster_id

    bits = await rows(db, "SELECT user_name, bits, kind, power_up_type FROM twitch_bits_uses")
    assert bits == [
        {"user_name": "Cool_Viewer", "bits": 100, "kind": "power_up",
         "power_up_type": "gigantify_an_emote"}
    ]  # fmt: skip
    auto = await rows(db, "SELECT reward_type, channel_points FROM twitch_automatic_redemptions")
    assert auto == [{"reward_type": "send_highlighted_message", "channel_points": 100}]
    chat = await rows(
        db, "SELECT chatter_user_name, text, source_channel_id FROM twitch_chat_messages"
    )
    assert chat == [
        {"chatter_user_name": "Cool_Viewer", "text": "Hi chat", "source_channel_id": None}
    ]
    notice = await rows(db, "SELECT notice_type, chatter_user_login FROM twitch_chat_notifications")
    assert notice == [{"notice_type": "gift_paid_upgrade", "chatter_user_login": "cool_viewer"}]
    ads = await rows(db, "SELECT duration_seconds, is_automatic FROM twitch_ad_breaks")
    assert ads == [{"duration_seconds": 60, "is_automatic": False}]
    shoutouts = await rows(
        db, "SELECT direction, other_user_login, viewer_count FROM twitch_shoutouts ORDER BY 1"
    )
    assert shoutouts == [
        {"direction": "received", "other_user_login": "raider_rick", "viewer_count": 860},
        {"direction": "sent", "other_user_login": "raider_rick", "viewer_count": 860},
    ]
    charity = {
        r["phase"]: r
        for r in await rows(
            db,
            "SELECT phase, campaign_id, user_name, amount::text, current_amount::text, "
            "target_amount::text, currency FROM twitch_charity",
        )
    }
    assert charity["donate"]["amount"] == "5.00" and charity["donate"]["user_name"] == "Cool_Viewer"
    assert charity["donate"]["campaign_id"] == charity["stop"]["campaign_id"] == "123-abc-456-def"
    assert charity["progress"]["current_amount"] == "2600.00"
    assert charity["start"]["target_amount"] == "15000.00" and charity["start"]["currency"] == "USD"
    shared = await rows(
        db,
        "SELECT phase, host_user_login, jsonb_array_length(participants) AS n FROM twitch_shared_chats ORDER BY 1",
    )
    assert [(s["phase"], s["n"]) for s in shared] == [("begin", 2), ("end", 0), ("update", 2)]


async def test_redelivered_events_are_stored_once(db: Database, tmp_path: Path) -> None:
    # Twitch may send one chat message, donation or redemption again under a new message id.
    chat: dict[str, Any] = {"message_id": "chat-1"}
    donation: dict[str, Any] = {"id": "donation-1"}
    auto: dict[str, Any] = {"id": "auto-1"}
    store = await store_frames(
        db,
        tmp_path,
        frame("channel.chat.message", "a", **chat),
        frame("channel.chat.message", "b", **chat),
        frame("channel.chat.message", "a", **chat),  # the very same frame again
        frame("channel.charity_campaign.donate", "c", **donation),
        frame("channel.charity_campaign.donate", "d", **donation),
        frame("channel.channel_points_automatic_reward_redemption.add", "e", **auto),
        frame("channel.channel_points_automatic_reward_redemption.add", "f", **auto),
    )
    assert store.counters.stored == 3 and store.counters.duplicates == 4
    counts = await rows(
        db,
        "SELECT (SELECT count(*) FROM twitch_chat_messages) AS chat, "
        "(SELECT count(*) FROM twitch_charity) AS charity, "
        "(SELECT count(*) FROM twitch_automatic_redemptions) AS auto",
    )
    assert counts == [{"chat": 1, "charity": 1, "auto": 1}]


async def test_bits_are_counted_once_when_a_cheer_also_comes_as_a_bits_use(
    db: Database, tmp_path: Path
) -> None:
    later = NOW + timedelta(seconds=2)
    await store_frames(
        db,
        tmp_path,
        # one cheer of 300, seen as both types (Twitch sends both)
        frame("channel.cheer", "cheer-1", bits=300),
        frame("channel.bits.use", "use-1", later, bits=300, type="cheer", power_up=None),
        # an anonymous cheer of 50, both types
        frame("channel.cheer", "cheer-2", is_anonymous=True, bits=50),
        frame("channel.bits.use", "use-2", later, bits=50, type="cheer", power_up=None),
        # a Power-up and a combo: only channel.bits.use sees them
        frame("channel.bits.use", "use-3", bits=100),
        frame("channel.bits.use", "use-4", bits=5, type="combo", power_up=None),
        # a cheer stored before channel.bits.use was subscribed: still counts
        frame("channel.cheer", "cheer-old", NOW - timedelta(days=30), bits=1000),
    )
    bits = await rows(
        db, "SELECT kind, sum(bits) AS bits FROM twitch_bits GROUP BY kind ORDER BY 1"
    )
    assert bits == [
        {"kind": "cheer", "bits": 1350},
        {"kind": "combo", "bits": 5},
        {"kind": "power_up", "bits": 100},
    ]


def test_each_new_type_reads_as_one_line_with_its_person() -> None:
    lines = {}
    for sub_type in NEW_TYPES:
        _, event = sample_event(sub_type)
        lines[sub_type] = (who(event), describe(sub_type, event))
        assert group_of(sub_type) != "other", sub_type
        assert lines[sub_type][1] != sub_type, f"{sub_type} has no text of its own"
    assert lines["channel.bits.use"] == (
        "Cool_Viewer",
        "Cool_Viewer used 100 Bits on a gigantified emote",
    )
    assert lines["channel.chat.message"] == ("Cool_Viewer", "Cool_Viewer: Hi chat")
    assert lines["channel.shoutout.receive"][1] == "Raider_Rick shouted you out to 860 viewers"
    assert lines["channel.charity_campaign.donate"][1] == (
        "Cool_Viewer donated 5.00 USD to Example Charity"
    )
    assert lines["channel.ad_break.begin"][1] == "Ad break of 60 s (started by Streamer)"
    assert lines["channel.shared_chat.begin"][1] == "Shared chat began with Streamer, Raider_Rick"
    anonymous = sample_event("channel.chat.notification", chatter_is_anonymous=True)[1]
    assert who(anonymous) == "Anonymous"


def test_a_bad_new_event_says_which_field_and_is_never_half_stored() -> None:
    _, donation = sample_event("channel.charity_campaign.donate")
    donation["amount"] = {"value": "5", "decimal_places": 2, "currency": "USD"}
    with pytest.raises(BadEvent, match=r"event.amount.value is not an integer"):
        normalise("m", "channel.charity_campaign.donate", "1", NOW.isoformat(), {"event": donation})
    _, chat = sample_event("channel.chat.message")
    del chat["chatter_user_id"]
    with pytest.raises(BadEvent, match=r"event.chatter_user_id missing"):
        normalise("m", "channel.chat.message", "1", NOW.isoformat(), {"event": chat})


async def test_export_gives_the_person_and_the_amount(db: Database, tmp_path: Path) -> None:
    await store_frames(
        db,
        tmp_path,
        frame("channel.chat.message", "m-chat"),
        frame("channel.charity_campaign.donate", "m-donate"),
        frame("channel.shoutout.receive", "m-shoutout"),
    )
    data = b"".join(
        [
            chunk
            async for chunk in export_events(
                db.pool, Calendar("UTC", 0), NOW - timedelta(hours=1), NOW + timedelta(hours=1),
                "json",
            )
        ]
    )  # fmt: skip
    exported = {r["type"]: r for r in json.loads(data)}
    assert exported["channel.chat.message"]["user_login"] == "cool_viewer"
    assert exported["channel.shoutout.receive"]["user_login"] == "raider_rick"
    donate = exported["channel.charity_campaign.donate"]
    assert (donate["amount"], donate["currency"], donate["user_name"]) == (
        "5.00",
        "USD",
        "Cool_Viewer",
    )


async def test_chat_text_goes_after_the_retention_days_and_counts_stay(
    db: Database, tmp_path: Path
) -> None:
    old = NOW - timedelta(days=40)
    await store_frames(
        db,
        tmp_path,
        frame("channel.chat.message", "old-1", old, message_id="c1"),
        frame("channel.chat.message", "old-2", old, message_id="c2"),
        frame("channel.chat.notification", "old-3", old),
        frame("channel.chat.message", "new-1", message_id="c3"),
    )
    assert await prune_chat_text(db, 30) == 3
    chat = await rows(db, "SELECT message_id, text FROM twitch_chat_messages ORDER BY 1")
    assert chat == [
        {"message_id": "new-1", "text": "Hi chat"},
        {"message_id": "old-1", "text": None},
        {"message_id": "old-2", "text": None},
    ]
    raw = {
        r["message_id"]: r
        for r in await rows(db, "SELECT message_id, subscription_type, payload FROM twitch_events")
    }
    assert len(raw) == 4  # every row kept: counts do not change
    old_event = raw["old-1"]["payload"]["event"]
    assert old_event["message"] == {"text": "", "fragments": []}
    assert old_event["chatter_user_login"] == "cool_viewer"  # who and when stay
    assert raw["new-1"]["payload"]["event"]["message"]["text"] == "Hi chat"
    row = {
        **raw["old-1"],
        "channel_id": "1000",
        "occurred_at": old,
        "payload": {"event": old_event},
    }
    shown = event_json(row, timezone.utc)
    assert shown["text"] == "Cool_Viewer sent a chat message"
    assert await prune_chat_text(db, 30) == 0  # nothing left to empty

    # The daemon's loop does the same on its own; 0 days keeps the text forever.
    await store_frames(db, tmp_path, frame("channel.chat.message", "old-4", old, message_id="c4"))
    async with chat_retention(db, 0, every=0.01):
        await asyncio.sleep(0.1)
    assert (await rows(db, "SELECT text FROM twitch_chat_messages WHERE message_id = 'old-4'"))[0][
        "text"
    ] == "Hi chat"
    async with chat_retention(db, 30, every=0.01):

        async def emptied() -> bool:
            found = await rows(
                db, "SELECT text FROM twitch_chat_messages WHERE message_id = 'old-4'"
            )
            return found[0]["text"] is None

        await wait_until(emptied, 5, "the retention loop emptied the old text")


async def test_a_channel_missing_chat_and_ads_scopes_keeps_the_rest_and_says_which(
    rig: Rig,
) -> None:
    granted = [s for s in LOGIN_SCOPES if s not in ("user:read:chat", "channel:read:ads")]
    await rig.connect(scopes=granted)
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    status = {
        r["subscription_type"]: (r["status"], r["detail"])
        for r in await rig.fetch(
            "SELECT subscription_type, status, detail FROM eventsub_subscriptions"
        )
    }
    assert status["channel.chat.message"] == ("missing_scope", "needs user:read:chat")
    assert status["channel.chat.notification"] == ("missing_scope", "needs user:read:chat")
    assert status["channel.ad_break.begin"] == ("missing_scope", "needs channel:read:ads")
    others = set(status) - {
        "channel.chat.message",
        "channel.chat.notification",
        "channel.ad_break.begin",
    }
    assert {status[t][0] for t in others} == {"enabled"}

    # The rest is captured.
    await rig.deliver(
        ("channel.bits.use", sample_event("channel.bits.use")[1]),
        ("channel.shoutout.receive", sample_event("channel.shoutout.receive")[1]),
    )

    async def captured() -> bool:
        return await rig.value("SELECT count(*) FROM twitch_events") == 2

    await wait_until(captured, 10, "bits and shoutout stored")

    # `streamerhub twitch status` names each type with the scope it lacks.
    summary = bot.status()[0]["subscriptions"]
    text = render_status(
        [
            {
                "display_name": "Streamer",
                "login": "streamer",
                "channel_id": "1000",
                "status": "connected",
                "connection": "connected",
                "subscriptions": summary,
                "events_today": 2,
            }
        ],
        daemon_running=True,
    )
    assert "channel.chat.message (needs user:read:chat)" in text
    assert "channel.ad_break.begin (needs channel:read:ads)" in text


@pytest.mark.e2e
async def test_the_daemon_captures_every_new_type_and_exports_it(
    daemon_factory, db_url: str
) -> None:
    async with FakeTwitch() as fake:
        env = {
            "STREAMERHUB_DATABASE_URL": db_url,
            "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
            "STREAMERHUB_TWITCH_API_URL": fake.api_url,
            "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
            "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
            "STREAMERHUB_EVENTS_CHAT_TEXT_DAYS": "30",
        }
        daemon = daemon_factory(env=env)
        daemon.data_dir.mkdir(parents=True)
        from test_twitch_e2e import _store_channel

        await _store_channel(db_url, daemon.data_dir, fake)
        await asyncio.to_thread(daemon.start)

        def subscribed() -> bool:
            return any(
                len(fake.state.session_subscriptions(s.id)) == len(SUBSCRIPTIONS) + 1
                for s in fake.state.sessions.values()
            )

        await wait_until(subscribed, 20, "daemon subscribed to every type on the fake")
        items = [{"subscription_type": t, "event": sample_event(t)[1]} for t in NEW_TYPES]
        outcome = await delivery.deliver(fake.state, items)
        assert outcome.delivered == len(NEW_TYPES)
        conn = await asyncpg.connect(db_url)
        try:

            async def stored() -> bool:
                return await conn.fetchval("SELECT count(*) FROM twitch_events") == len(NEW_TYPES)

            await wait_until(stored, 10, "every new type committed by the daemon")
            typed = await conn.fetchval(
                "SELECT (SELECT count(*) FROM twitch_bits_uses) + "
                "(SELECT count(*) FROM twitch_chat_messages) + "
                "(SELECT count(*) FROM twitch_charity) + (SELECT count(*) FROM twitch_shoutouts)"
            )
            assert typed == 1 + 1 + 4 + 2
        finally:
            await conn.close()

        cli_env = {**os.environ, **env}
        code, out = await _cli(
            "export", "events", "--format", "json", "--config", str(daemon.config),
            "--data-dir", str(daemon.data_dir), env=cli_env,
        )  # fmt: skip
        assert code == 0, out
        exported = json.loads(out[out.index("[") :])
        assert sorted(r["type"] for r in exported) == sorted(NEW_TYPES)

        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
        assert "Traceback" not in daemon.log()


@pytest.mark.e2e
async def test_the_dashboard_shows_the_new_types_and_which_scope_each_lacks(
    tmp_path: Path, db_url: str
) -> None:
    from web_support import CHANNEL, add_channel, dashboard, notification, store_events

    async with dashboard(tmp_path, db_url) as dash:
        await dash.create_owner()
        await add_channel(dash.db)
        now = datetime.now(timezone.utc) - timedelta(minutes=5)
        items = [
            notification(t, now + timedelta(seconds=i), CHANNEL)
            for i, t in enumerate(
                ["channel.chat.message", "channel.bits.use", "channel.shoutout.receive"]
            )
        ]
        await store_events(dash.db, dash.settings.data_dir, items)
        page = await (await dash.client.get("/events?type=chat&type=cheers&type=shoutouts")).text()
        assert "Cool_Viewer: Hi chat" in page
        assert "Cool_Viewer used 100 Bits on a gigantified emote" in page
        assert "Raider_Rick shouted you out to 860 viewers" in page

        async with dash.db.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO eventsub_subscriptions (channel_id, subscription_type, version, status,"
                " detail) VALUES ($1, 'channel.chat.message', '1', 'missing_scope',"
                " 'needs user:read:chat'), ($1, 'channel.bits.use', '1', 'enabled', NULL)",
                CHANNEL,
            )
        settings = await (await dash.client.get("/settings")).text()
        assert "channel.chat.message v1" in settings and "needs user:read:chat" in settings
        assert 'id="missing-scopes"' in settings and "channel.bits.use v1" not in settings
