"""Numbers that mean what they say: each card and column against a hand-computed scenario."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from analytics_data import add_event, add_samples, z
from web_support import add_channel, dashboard

from streamerhub.analytics.export import export_events, export_series
from streamerhub.analytics.periods import Calendar, calendar_period, custom_period
from streamerhub.analytics.queries import stat_cards, time_series
from streamerhub.analytics.rollups import activity_totals, session_top_chatters, unique_chatters
from streamerhub.analytics.sessions import get_session
from streamerhub.db import Database, load_migrations
from streamerhub.web.overview import AVG_TIP, NO_TOTAL, card_view

UTC_CAL = Calendar("UTC")
PARIS = Calendar("Europe/Paris")
ROOT = Path(__file__).resolve().parent.parent


async def cards_of(conn: Any, day: date, now: str = "2026-05-20T00:00Z") -> dict[str, Any]:
    stats = await stat_cards(conn, "c1", calendar_period(UTC_CAL, "day", day), now=z(now))
    return {c["key"]: c for c in card_view(stats)} | {"_": stats.cards}


async def totals(conn: Any, *rows: tuple[str, int, int]) -> None:
    await conn.executemany(
        "INSERT INTO twitch_totals (channel_id, taken_at, followers, subscribers) "
        "VALUES ('c1', $1, $2, $3)",
        [(z(at), f, s) for at, f, s in rows],
    )


async def collect(gen: Any) -> list[dict[str, str]]:
    data = b"".join([chunk async for chunk in gen]).decode()
    return list(csv.DictReader(io.StringIO(data)))


# ----------------------------------------------------------------------------- followers


async def test_followers_and_subscribers_cards_never_show_an_event_count_as_a_total(
    db: Database,
) -> None:
    async with db.pool.acquire() as conn:
        for minute in range(3):
            await add_event(conn, "follow", "c1", z(f"2026-05-10T10:0{minute}Z"), user=f"f{minute}")
        await add_event(conn, "sub", "c1", z("2026-05-10T11:00Z"))
        await add_event(conn, "gift", "c1", z("2026-05-10T11:05Z"), total=4)
        cards = await cards_of(conn, date(2026, 5, 10))
    # No totals snapshot yet: 3 follows and 5 subs happened, the totals are unknown.
    assert cards["followers"]["value"] is None and cards["subs"]["value"] is None
    assert cards["followers"]["tip"] == NO_TOTAL == cards["subs"]["tip"]
    assert "+3 in this period" in cards["followers"]["sub"]
    assert "total not known yet" in cards["followers"]["sub"]


async def test_unfollows_and_net_change_are_shown_and_exported(db: Database) -> None:
    async with db.pool.acquire() as conn:
        # Twitch: 1,000 followers before the 10th, 1,003 at its end; 5 follows came in, so 2
        # people unfollowed.
        await totals(conn, ("2026-05-09T23:50Z", 1000, 40), ("2026-05-10T23:50Z", 1003, 41))
        for i in range(5):
            await add_event(conn, "follow", "c1", z(f"2026-05-10T1{i}:00Z"), user=f"f{i}")
        cards = await cards_of(conn, date(2026, 5, 10))
        assert cards["followers"]["value"] == 1003 and cards["subs"]["value"] == 41
        assert cards["followers"]["sub"] == "+5 in this period · −2 unfollows · net +3"
        assert cards["_"]["followers_lost"].value == 2
        week = calendar_period(UTC_CAL, "week", date(2026, 5, 10))
        rows = await collect(export_series(db.pool, "c1", week, "csv", now=z("2026-05-20T00:00Z")))
    by_day = {r["start_utc"][:10]: r for r in rows}
    assert (by_day["2026-05-10"]["follows"], by_day["2026-05-10"]["followers_net"]) == ("5", "3")
    assert by_day["2026-05-10"]["followers_total"] == "1003"
    assert by_day["2026-05-08"]["followers_net"] == ""  # no total by then: unknown


# ----------------------------------------------------------------------------- viewers


async def test_a_spike_just_before_midnight_is_that_days_peak_not_the_next(db: Database) -> None:
    async with db.pool.acquire() as conn:
        await add_event(conn, "online", "c1", z("2026-05-09T23:00Z"), stream_id="s1")
        counts = [100] * 120
        counts[59] = 999  # 23:59:30, its 60 s span reaching 00:00:30 on the 10th
        await add_samples(conn, "c1", "s1", z("2026-05-09T23:00:30Z"), counts)
        await add_event(conn, "offline", "c1", z("2026-05-10T01:00Z"))
        day9 = await cards_of(conn, date(2026, 5, 9))
        day10 = await cards_of(conn, date(2026, 5, 10))
        hours = await time_series(
            conn,
            "c1",
            custom_period(UTC_CAL, date(2026, 5, 9), date(2026, 5, 10)),
            z("2026-05-20T00:00Z"),
        )
    assert day9["_"]["viewers_peak"].value == 999
    # The first sample 30 s after going live is normal polling, not partial coverage.
    assert day9["watch_hours"]["sub"] == "viewers × time watched"
    assert day9["_"]["watch_coverage"].value == 99.2  # 59:30 of the hour's 60:00
    assert day10["_"]["viewers_peak"].value == 100
    peaks = {p.start.isoformat()[:13]: p.viewers_peak for p in hours.points}
    assert (peaks["2026-05-09T23"], peaks["2026-05-10T00"]) == (999, 100)


async def test_average_viewers_one_definition_with_gaps_stated(db: Database) -> None:
    async with db.pool.acquire() as conn:
        # Live 10:00–10:30. 100 viewers sampled 10:00–10:09, nothing until 10:20, then 300.
        await add_event(conn, "online", "c1", z("2026-05-10T10:00Z"), stream_id="s1")
        await add_samples(conn, "c1", "s1", z("2026-05-10T10:00Z"), [100] * 10)
        await add_samples(conn, "c1", "s1", z("2026-05-10T10:20Z"), [300] * 10)
        await add_event(conn, "offline", "c1", z("2026-05-10T10:30Z"))
        cards = await cards_of(conn, date(2026, 5, 10))
    # By hand: the 10:09 sample counts its 90 s cap, the 10:29 one until the end.
    # 100 × (9 × 60 + 90) + 300 × (9 × 60 + 60) = 63,000 + 180,000 viewer-seconds over
    # 630 + 600 sampled seconds: 197.6 average concurrent viewers, not 243,000 / 1,800 = 135.
    assert cards["viewers"]["value"] == 197.6
    assert cards["watch_hours"]["value"] == 67.5
    assert cards["watch_hours"]["sub"] == "partial: samples cover 68.3% of live time"
    assert cards["viewers"]["tip"] == AVG_TIP
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "watch time ÷ the live time the viewer samples cover" in readme
    assert "watch time ÷ the live time the viewer samples cover" in AVG_TIP


# ----------------------------------------------------------------------------- clocks


async def test_a_follow_counts_at_followed_at_in_charts_and_exports(db: Database) -> None:
    async with db.pool.acquire() as conn:
        mid = await add_event(conn, "follow", "c1", z("2026-05-10T23:59:58Z"), user="late")
        # Twitch's message about it arrived after midnight.
        await conn.execute(
            "UPDATE twitch_events SET occurred_at = '2026-05-11T00:00:03Z' WHERE message_id = $1",
            mid,
        )
        day10 = await cards_of(conn, date(2026, 5, 10))
        day11 = await cards_of(conn, date(2026, 5, 11))
    assert (day10["_"]["followers_gained"].value, day11["_"]["followers_gained"].value) == (1, 0)
    tenth = await collect(
        export_events(db.pool, UTC_CAL, z("2026-05-10T00:00Z"), z("2026-05-11T00:00Z"))
    )
    eleventh = await collect(
        export_events(db.pool, UTC_CAL, z("2026-05-11T00:00Z"), z("2026-05-12T00:00Z"))
    )
    assert [(r["user_login"], r["occurred_at_utc"]) for r in tenth] == [
        ("late", "2026-05-10T23:59:58Z")
    ]
    assert eleventh == []


def test_custom_period_compares_with_the_same_wall_clock_days_across_dst() -> None:
    # 29 March 2026 in Paris has 23 hours: the day before starts at midnight, not at 01:00.
    one = custom_period(PARIS, date(2026, 3, 29), date(2026, 3, 29))
    assert one.previous(z("2026-04-10T00:00Z")) == (z("2026-03-27T23:00Z"), z("2026-03-28T23:00Z"))
    three = custom_period(PARIS, date(2026, 3, 29), date(2026, 3, 31))
    assert three.previous(z("2026-04-10T00:00Z")) == (
        PARIS.day_start(date(2026, 3, 26)),
        PARIS.day_start(date(2026, 3, 29)),
    )
    # Halfway through the range: the same days and time of day before it.
    assert three.previous(z("2026-03-30T10:00Z")) == (
        PARIS.day_start(date(2026, 3, 26)),
        z("2026-03-27T11:00Z"),  # 12:00 CEST on the 30th → 12:00 CET on the 27th
    )


# ----------------------------------------------------------------------------- raw-log analytics


async def raw(conn: Any, sub_type: str, at: str, event: dict[str, Any], mid: str) -> None:
    """A notification of a type analytics reads from the raw log only (no typed table)."""
    await conn.execute(
        """INSERT INTO twitch_events (message_id, subscription_type, subscription_version,
                                      channel_id, occurred_at, payload)
           VALUES ($1, $2, '1', 'c1', $3, $4::text::jsonb) ON CONFLICT DO NOTHING""",
        mid,
        sub_type,
        z(at),
        json.dumps({"event": {"broadcaster_user_id": "c1", **event}}),
    )


def chat(user: str, source: str | None = None) -> dict[str, Any]:
    return {
        "chatter_user_id": f"id-{user}",
        "chatter_user_login": user,
        "chatter_user_name": user.title(),
        "message": {"text": "hi", "fragments": []},
        "source_broadcaster_user_id": source,
    }


def bits_use(user: str, kind: str, bits: int) -> dict[str, Any]:
    return {"user_id": f"id-{user}", "user_login": user, "bits": bits, "type": kind}


async def build_stream(conn: Any) -> None:
    """Live 10:07:30–11:52:10 on 10 May 2026 (UTC): edges off every quarter."""
    await add_event(conn, "online", "c1", z("2026-05-10T10:07:30Z"), stream_id="s1")
    await add_event(conn, "offline", "c1", z("2026-05-10T11:52:10Z"))
    messages = [
        ("2026-05-10T09:00Z", "dave", None),  # before the stream, same day
        ("2026-05-10T10:08Z", "alice", None),
        ("2026-05-10T10:20Z", "bob", None),
        ("2026-05-10T10:50Z", "alice", None),
        ("2026-05-10T11:10Z", "alice", None),
        ("2026-05-10T11:15Z", "carol", "other-channel"),  # shared chat: not our chat
        ("2026-05-10T11:52:00Z", "bob", None),
    ]
    for i, (at, user, source) in enumerate(messages):
        await raw(conn, "channel.chat.message", at, chat(user, source), f"chat{i}")
    await raw(conn, "channel.chat.message", "2026-05-10T10:08Z", chat("alice"), "chat1")  # again
    await raw(conn, "channel.bits.use", "2026-05-10T10:30Z", bits_use("alice", "cheer", 100), "b1")
    await conn.execute(
        "INSERT INTO twitch_events (message_id, subscription_type, subscription_version, "
        "channel_id, occurred_at, payload) VALUES ('ch1', 'channel.cheer', '1', 'c1', $1, '{}')",
        z("2026-05-10T10:30Z"),
    )
    await conn.execute(
        "INSERT INTO twitch_cheers (message_id, channel_id, user_id, user_login, bits, occurred_at) "
        "VALUES ('ch1', 'c1', 'id-alice', 'alice', 100, $1)",
        z("2026-05-10T10:30Z"),
    )
    await raw(conn, "channel.bits.use", "2026-05-10T11:00Z", bits_use("bob", "power_up", 50), "b2")
    await raw(conn, "channel.bits.use", "2026-05-10T11:01Z", bits_use("eve", "combo", 20), "b3")
    await raw(conn, "channel.ad_break.begin", "2026-05-10T10:30Z", {"duration_seconds": 60}, "a1")
    await raw(conn, "channel.ad_break.begin", "2026-05-10T11:30Z", {"duration_seconds": 90}, "a2")
    await raw(
        conn,
        "channel.shoutout.receive",
        "2026-05-10T10:40Z",
        {"from_broadcaster_user_id": "id-pal", "viewer_count": 120},
        "so1",
    )
    for i, cents in enumerate((1050, 500)):
        amount = {"value": cents, "decimal_places": 2, "currency": "USD"}
        await raw(
            conn,
            "channel.charity_campaign.donate",
            "2026-05-10T11:20Z",
            {"amount": amount},
            f"d{i}",
        )
    await add_event(conn, "sub", "c1", z("2026-05-10T10:45Z"), user="frank")
    await add_event(conn, "gift", "c1", z("2026-05-10T10:46Z"), user="santa", total=5)


async def test_chat_bits_ads_shoutouts_and_charity_from_the_raw_log(db: Database) -> None:
    async with db.pool.acquire() as conn:
        await build_stream(conn)
        cards = await cards_of(conn, date(2026, 5, 10))
        c = {name: card.value for name, card in cards["_"].items()}
        session = await get_session(conn, "c1", "s1", now=z("2026-05-20T00:00Z"))
        # Chat text deleted (retention): every count stays.
        await conn.execute(
            "DELETE FROM twitch_events WHERE subscription_type = 'channel.chat.message'"
        )
        after = await cards_of(conn, date(2026, 5, 10))
    # Day: dave, alice ×3, bob ×2 (carol's message was another channel's, alice's repeat a
    # duplicate delivery). 6 messages over 104 min 40 s live.
    assert (c["chat_messages"], c["chatters"], c["messages_per_minute"]) == (6, 3, 0.1)
    # Bits: 100 cheered (once, though both channel.cheer and channel.bits.use tell of it), a
    # 50-Bit Power-up and a 20-Bit combo.
    assert (c["bits"], c["bits_cheers"], c["bits_power_ups"], c["bits_combos"]) == (
        170,
        100,
        50,
        20,
    )
    assert cards["bits"]["sub"] == "100 cheers · 50 Power-ups · 20 combos"
    assert (c["ad_breaks"], c["ad_minutes"]) == (2, 2.5)
    assert (c["shoutouts"], c["shoutout_viewers"], c["charity"]) == (1, 120, 15.5)
    assert after["_"]["chat_messages"].value == 6 and after["_"]["chatters"].value == 3

    assert session is not None
    a = session.activity
    assert (a["chat_messages"], a["chatters"]) == (5, 2)  # dave chatted before the stream
    assert [(t["user_login"], t["messages"]) for t in session.top_chatters] == [
        ("alice", 3),
        ("bob", 2),
    ]
    # A sub weighs 500 Bits: santa's 5 gifts, frank's sub, alice's 100, bob's 50, eve's 20.
    assert [s["user_id"] for s in session.top_supporters] == [
        "id-santa",
        "id-frank",
        "id-alice",
        "id-bob",
        "id-eve",
    ]
    assert [(at.isoformat(), s) for at, s in session.ad_breaks] == [
        ("2026-05-10T10:30:00+00:00", 60),
        ("2026-05-10T11:30:00+00:00", 90),
    ]


async def test_unique_chatters_and_counts_equal_naive_for_any_range(db: Database) -> None:
    rng = random.Random(13)
    start = z("2026-03-26T00:00Z")
    messages = []
    async with db.pool.acquire() as conn:
        for i in range(400):
            at = start + timedelta(seconds=rng.randrange(6 * 86400))
            user = f"u{int(40 * rng.random() ** 2)}"
            source = "other" if rng.random() < 0.05 else None
            messages.append((at, user, source))
            # one statement each, as live deliveries are stored
            await raw(conn, "channel.chat.message", at.isoformat(), chat(user, source), f"m{i}")
        ours = [(at, user) for at, user, source in messages if source is None]
        ranges = [
            (PARIS.day_start(date(2026, 3, 28)), PARIS.day_start(date(2026, 3, 30))),  # DST
            (start, start + timedelta(days=6)),  # from before the first message
            (z("2026-03-27T10:07:13Z"), z("2026-03-30T22:59:59Z")),  # unaligned edges
            (z("2026-03-29T01:00Z"), z("2026-03-29T01:00Z")),  # empty
        ]
        naive = [
            (len({u for at, u in ours if lo <= at < hi}), sum(lo <= at < hi for at, _ in ours))
            for lo, hi in ranges
        ]

        async def fast() -> list[tuple[int, int]]:
            counts = await unique_chatters(conn, "c1", ranges)
            totals = await activity_totals(conn, "c1", ranges)
            return [(n, t["chat_messages"]) for n, t in zip(counts, totals, strict=True)]

        assert await fast() == naive
        await conn.execute("SELECT analytics_activity_rebuild()")  # the bulk path agrees
        assert await fast() == naive


async def test_stream_page_shows_chat_supporters_and_ad_breaks(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await dash.create_owner()
        await add_channel(dash.db, "c1")
        async with dash.db.pool.acquire() as conn:
            await build_stream(conn)
        page = await dash.client.get("/streams/c1/s1")
        text = await page.text()
        overview = await (await dash.client.get("/?period=all&channel=c1")).text()
    assert page.status == 200
    assert 'data-card="chat"' in text and "2 chatters" in text
    assert "<td>alice</td><td>3</td>" in text  # top chatter
    assert "10:30:00 · 60 s of ads" in text
    # Ad breaks are moments of the stream too: listed with raids and hype trains, and drawn
    # on the curve as a band of their length (the chart data says where and how long).
    listed = text.split('id="moments"', 1)[1].split("</ul>", 1)[0]
    assert "Ad break, 60 s" in listed and "Ad break, 90 s" in listed
    chart = json.loads(text.split('id="stream-data">', 1)[1].split("</script>", 1)[0])
    bands = [(m["t"], m["seconds"]) for m in chart["moments"] if m["kind"] == "ad"]
    assert bands == [
        (z("2026-05-10T10:30Z").timestamp(), 60),
        (z("2026-05-10T11:30Z").timestamp(), 90),
    ]
    assert "2.5 minutes" in text
    assert AVG_TIP in overview.replace("&#39;", "'")


async def test_malformed_payloads_count_what_they_can_and_never_fail_the_insert(
    db: Database,
) -> None:
    async with db.pool.acquire() as conn:
        await raw(conn, "channel.bits.use", "2026-05-10T10:00Z", bits_use("x", "power_up", 0), "b0")
        await raw(
            conn,
            "channel.bits.use",
            "2026-05-10T10:01Z",
            {"user_id": "id-y", "type": "combo", "bits": "lots"},
            "b1",
        )
        await raw(
            conn, "channel.chat.message", "2026-05-10T10:02Z", {"message": "no chatter"}, "c0"
        )
        amount = {"value": "1e99", "decimal_places": -3, "currency": "USD"}
        await raw(
            conn, "channel.charity_campaign.donate", "2026-05-10T10:03Z", {"amount": amount}, "d0"
        )
        await raw(
            conn, "channel.ad_break.begin", "2026-05-10T10:04Z", {"duration_seconds": None}, "a0"
        )
        await conn.execute(
            "INSERT INTO twitch_events (message_id, subscription_type, subscription_version, "
            "channel_id, occurred_at, payload) VALUES "
            "('weird', 'channel.chat.message', '1', 'c1', '2026-05-10T10:05Z', '{\"event\": [1]}')"
        )
        c = {k: card.value for k, card in (await cards_of(conn, date(2026, 5, 10)))["_"].items()}
    # Two messages, nobody to name as their chatter; unreadable amounts count as 0.
    assert (c["chat_messages"], c["chatters"]) == (2, 0)
    assert (c["bits_power_ups"], c["bits_combos"], c["charity"]) == (0, 0, 0.0)
    assert (c["ad_breaks"], c["ad_minutes"]) == (1, 0.0)


async def cheer(conn: Any, channel: str, at: str, user: str, bits: int) -> None:
    """A channel.cheer with its typed row, the cheerer named."""
    await raw(
        conn, "channel.cheer", at, {"user_id": f"id-{user}", "bits": bits}, f"cheer-{user}-{at}"
    )
    await conn.execute(
        "INSERT INTO twitch_cheers (message_id, channel_id, user_id, user_login, bits, occurred_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        f"cheer-{user}-{at}",
        channel,
        f"id-{user}",
        user,
        bits,
        z(at),
    )


async def session_chatters(conn: Any, stream_id: str) -> list[tuple[str, int]]:
    return [
        (t["user_login"], t["messages"])
        for t in await session_top_chatters(conn, "c1", stream_id, limit=10)
    ]


async def test_a_streams_top_chatters_follow_its_start_and_end(db: Database) -> None:
    """Kept per stream as messages arrive, and recounted when the stream's window moves: chat
    stored before the stream.online, an end, the next stream, a late message, a rebuild."""
    async with db.pool.acquire() as conn:
        for i, (at, user) in enumerate(
            [
                ("2026-05-10T09:55Z", "alice"),  # before the stream
                ("2026-05-10T10:05Z", "bob"),
                ("2026-05-10T10:20Z", "alice"),
                ("2026-05-10T10:30Z", "carol"),
                ("2026-05-10T11:10Z", "bob"),
                ("2026-05-10T12:10Z", "alice"),
            ]
        ):
            await raw(conn, "channel.chat.message", at, chat(user), f"early{i}")
        await cheer(conn, "c1", "2026-05-10T10:10Z", "erin", 300)
        await add_event(conn, "sub", "c1", z("2026-05-10T10:40Z"), user="fay")
        await cheer(conn, "c1", "2026-05-10T11:30Z", "gus", 900)
        await add_event(conn, "online", "c1", z("2026-05-10T10:00Z"), stream_id="s1")
        # Live: everything from its start on, counted from the chat (kept once it ends).
        live = await get_session(conn, "c1", "s1", now=z("2026-05-10T13:00Z"))
        assert live is not None and live.activity["chatters"] == 3
        assert [(t["user_login"], t["messages"]) for t in live.top_chatters] == [
            ("alice", 2),
            ("bob", 2),
            ("carol", 1),
        ]
        assert [t["user_id"] for t in live.top_supporters] == ["id-gus", "id-fay", "id-erin"]
        assert await session_chatters(conn, "s1") == []
        await add_event(conn, "offline", "c1", z("2026-05-10T11:00:30Z"))
        assert await session_chatters(conn, "s1") == [("alice", 1), ("bob", 1), ("carol", 1)]
        await add_event(conn, "online", "c1", z("2026-05-10T12:00Z"), stream_id="s2")
        await raw(conn, "channel.chat.message", "2026-05-10T10:45Z", chat("carol"), "late")
        await raw(conn, "channel.chat.message", "2026-05-10T12:20Z", chat("dave"), "live")
        assert await session_chatters(conn, "s1") == [("carol", 2), ("alice", 1), ("bob", 1)]
        s2 = await get_session(conn, "c1", "s2", now=z("2026-05-10T13:00Z"))
        assert s2 is not None
        assert [(t["user_login"], t["messages"]) for t in s2.top_chatters] == [
            ("alice", 1),
            ("dave", 1),
        ]
        await add_event(conn, "offline", "c1", z("2026-05-10T12:30Z"))
        assert await session_chatters(conn, "s2") == [("alice", 1), ("dave", 1)]
        s1 = await get_session(conn, "c1", "s1", now=z("2026-05-10T13:00Z"))
        assert s1 is not None
        assert (s1.activity["chat_messages"], s1.activity["chatters"]) == (4, 3)
        assert [(t["user_login"], t["messages"]) for t in s1.top_chatters] == [
            ("carol", 2),
            ("alice", 1),
            ("bob", 1),
        ]
        # gus cheered after the end; fay's sub weighs 500 Bits
        assert [(t["user_id"], t["bits"]) for t in s1.top_supporters] == [
            ("id-fay", 0),
            ("id-erin", 300),
        ]
        await conn.execute("DELETE FROM twitch_subscriptions WHERE user_id = 'id-fay'")
        s1 = await get_session(conn, "c1", "s1", now=z("2026-05-10T13:00Z"))
        assert s1 is not None and [t["user_id"] for t in s1.top_supporters] == ["id-erin"]
        await conn.execute("SELECT analytics_activity_rebuild()")  # the bulk path agrees
        assert await session_chatters(conn, "s1") == [("carol", 2), ("alice", 1), ("bob", 1)]
        assert await session_chatters(conn, "s2") == [("alice", 1), ("dave", 1)]
        await conn.execute("DELETE FROM stream_sessions WHERE stream_id = 's2'")
        assert await session_chatters(conn, "s2") == []


async def test_upgrading_to_bounded_chat_rollups_keeps_every_figure(pg_cluster: Any) -> None:
    """0019 fills the minute rollup, the chatter bitmaps and the streams' chatters of a history
    stored before it: the figures are the naive ones, and the trigger carries on from there."""
    admin = await asyncpg.connect(
        host=str(pg_cluster.socket_dir), user="streamerhub", database="postgres"
    )
    try:
        await admin.execute("DROP DATABASE IF EXISTS upgrade_0019 WITH (FORCE)")
    finally:
        await admin.close()
    await pg_cluster.create_database("upgrade_0019")
    conn = await asyncpg.connect(pg_cluster.url_for("upgrade_0019"))
    try:
        migrations = load_migrations()
        for migration in migrations:
            if migration.version < 19:
                await conn.execute(migration.sql)
        rng = random.Random(19)
        start = z("2026-03-28T20:00Z")
        messages = []
        await add_event(conn, "online", "c1", start + timedelta(hours=1), stream_id="s1")
        await add_event(conn, "offline", "c1", start + timedelta(hours=3, seconds=17))
        for i in range(300):
            at = start + timedelta(seconds=rng.randrange(5 * 3600))
            user = f"u{int(30 * rng.random() ** 2)}"
            messages.append((at, user))
            await raw(conn, "channel.chat.message", at.isoformat(), chat(user), f"up{i}")
        await cheer(conn, "c1", (start + timedelta(hours=2)).isoformat(), "erin", 3)
        await add_event(conn, "gift", "c1", start + timedelta(hours=2), user="santa", total=2)
        for migration in migrations:
            if migration.version >= 19:
                await conn.execute(migration.sql)
        at = start + timedelta(hours=2, minutes=7, seconds=3)  # after the upgrade, by the trigger
        messages.append((at, "newcomer"))
        await raw(conn, "channel.chat.message", at.isoformat(), chat("newcomer"), "after")
        ranges = [
            (start, start + timedelta(hours=5)),
            (start + timedelta(minutes=61, seconds=5), start + timedelta(hours=3, seconds=17)),
            (z("2026-03-29T00:00Z"), z("2026-03-29T00:59:30Z")),
        ]
        naive = [
            (len({u for t, u in messages if lo <= t < hi}), sum(lo <= t < hi for t, _ in messages))
            for lo, hi in ranges
        ]
        counts = await unique_chatters(conn, "c1", ranges)
        totals = await activity_totals(conn, "c1", ranges)
        assert [(n, t["chat_messages"]) for n, t in zip(counts, totals, strict=True)] == naive
        lo, hi = start + timedelta(hours=1), start + timedelta(hours=3, seconds=17)
        in_stream: dict[str, int] = {}
        for t, u in messages:
            if lo <= t < hi:
                in_stream[u] = in_stream.get(u, 0) + 1
        expected = sorted(in_stream.items(), key=lambda kv: (-kv[1], f"id-{kv[0]}"))[:10]
        assert await session_chatters(conn, "s1") == expected
        session = await get_session(conn, "c1", "s1", now=z("2026-04-01T00:00Z"))
        assert session is not None
        assert [(t["user_id"], t["gifted"], t["bits"]) for t in session.top_supporters] == [
            ("id-santa", 2, 0),
            ("id-erin", 0, 3),
        ]
        assert session.activity["chatters"] == len(in_stream)
    finally:
        await conn.close()
