"""Dashboard pages on seeded data: overview numbers per period, events (filters, keyset pages,
export), streams, the live feed (SSE: latency, Last-Event-ID resume, filters), error pages."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from web_support import CHANNEL, add_channel, add_samples, dashboard, notification, store_events

from streamerhub.analytics.export import EVENT_COLUMNS
from streamerhub.events.store import EventStore
from streamerhub.web.context import SERVICES
from streamerhub.web.feed import FEED
from streamerhub.web.users import UserStore

pytestmark = pytest.mark.e2e
NOW = dt.datetime.now(dt.timezone.utc)


def ago(**kw: float) -> dt.datetime:
    return NOW - dt.timedelta(**kw)


async def seed_history(dash: Any) -> None:
    """Two weeks ago: 5 follows, a gift of 3, 1000 bits. Today: 2 follows, 1 sub, a raid."""
    await add_channel(dash.db)
    old, today = ago(days=14), NOW - dt.timedelta(minutes=30)
    items = [
        notification(
            "channel.follow",
            old + dt.timedelta(minutes=i),
            user_login=f"old_fan{i}",
            user_name=f"Old_Fan{i}",
        )
        for i in range(5)
    ]
    items += [
        notification("channel.subscription.gift", old, total=3),
        notification("channel.cheer", old, bits=1000),
        notification("channel.follow", today, user_login="new_fan", user_name="New_Fan"),
        notification("channel.follow", today + dt.timedelta(minutes=1)),
        notification("channel.subscribe", today),
        notification("channel.raid", today, viewers=77),
    ]
    await store_events(dash.db, dash.settings.data_dir, items)


async def signed_in(dash: Any) -> None:
    await dash.create_owner()


# ----------------------------------------------------------------------------- overview


async def test_overview_cards_follow_the_period(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await signed_in(dash)
        await seed_history(dash)

        async def cards(query: str) -> dict[str, Any]:
            resp = await dash.client.get(f"/overview/data?{query}")
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            return {c["key"]: c for c in body["cards"]} | {"_": body}

        day, everything = await cards("period=day"), await cards("period=all")
        assert "+2 in this period" in day["followers"]["sub"]
        assert "+7 in this period" in everything["followers"]["sub"]
        assert day["bits"]["value"] == 0 and everything["bits"]["value"] == 1000
        # 1 new + 3 gifted came in, but Twitch's total was never polled: unknown, not 4.
        assert everything["subs"]["value"] is None and "1 new" in everything["subs"]["sub"]
        assert day["raids"]["value"] == 1
        first = ago(days=15).date().isoformat()
        custom = await cards(f"period=custom&from={first}&to={ago(days=13).date().isoformat()}")
        assert custom["bits"]["value"] == 1000 and "+5 in this period" in custom["followers"]["sub"]

        page = await dash.client.get("/?period=all")
        html = await page.text()
        assert page.status == 200 and 'data-card="followers"' in html and "All time" in html
        bad = await dash.client.get("/?period=custom&from=2025-13-01&to=2025-01-01")
        assert bad.status == 400 and "is not a date" in await bad.text()


# ----------------------------------------------------------------------------- events


async def test_events_filters_pages_and_export(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await signed_in(dash)
        await add_channel(dash.db)
        base = ago(days=3)
        items = [
            notification(
                "channel.follow",
                base + dt.timedelta(seconds=i),
                user_login=f"fan{i:03d}",
                user_name=f"Fan{i:03d}",
            )
            for i in range(120)
        ]
        items.append(notification("channel.cheer", base, bits=500, user_login="whale"))
        await store_events(dash.db, dash.settings.data_dir, items)

        seen: list[str] = []
        url = "/events?type=follows"
        while url:
            html = await (await dash.client.get(url)).text()
            seen += [
                line.split("</td>")[0] for line in html.split("<td>")[3::3] if "followed" in line
            ]
            nxt = html.split('id="older" href="', 1)
            url = "/events" + nxt[1].split('"', 1)[0].replace("&amp;", "&") if len(nxt) > 1 else ""
        assert len(seen) == 120 and len(set(seen)) == 120, "keyset pages: all, no repeats"

        whale = await (await dash.client.get("/events?user=@Whale")).text()
        assert "cheered 500 bits" in whale and "followed" not in whale
        none = await (await dash.client.get(f"/events?to={ago(days=10).date()}")).text()
        assert "No events match" in none
        bad = await dash.client.get("/events?from=yesterday")
        assert bad.status == 400 and "is not a date like" in await bad.text()

        exported = await dash.client.get("/events/export?format=csv&type=follows")
        rows = list(csv.DictReader(io.StringIO(await exported.text())))
        assert len(rows) == 120 and rows[0]["type"] == "channel.follow"
        assert rows[0]["occurred_at_utc"].endswith("Z") and list(rows[0]) == list(EVENT_COLUMNS)
        assert rows[0]["user_login"] == "fan119"  # newest first, as the page lists them
        as_json = json.loads(
            await (await dash.client.get("/events/export?format=json&type=cheers")).text()
        )
        assert [e["user_login"] for e in as_json] == ["whale"] and as_json[0]["bits"] == 500
        assert as_json[0]["event"]["bits"] == 500


# ----------------------------------------------------------------------------- streams


async def test_stream_sessions_and_stream_page(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await signed_in(dash)
        await add_channel(dash.db)
        start = ago(hours=3)
        online = notification("stream.online", start, id="stream-1")
        later = [
            notification("channel.follow", start + dt.timedelta(minutes=5)),
            notification("stream.offline", start + dt.timedelta(hours=1)),
        ]
        await store_events(dash.db, dash.settings.data_dir, [online, *later])
        await add_samples(dash.db, "stream-1", start, [10, 20, 30, 40])
        html = await (await dash.client.get("/streams")).text()
        assert "/streams/1000/stream-1" in html
        page = await dash.client.get("/streams/1000/stream-1")
        text = await page.text()
        assert page.status == 200 and "followed" in text and '"viewers": [10, 20, 30, 40]' in text
        listing = await (await dash.client.get("/streams")).text()
        assert "26.7" in listing  # 10, 20, 30 for a minute each, 40 until 90 s (poll + slack)
        # Multistream runs during the stream become up / restarted / down markers.
        async with dash.db.pool.acquire() as conn:
            target = await conn.fetchval(
                "INSERT INTO stream_targets (name, url, stream_key_sealed, key_hint) "
                "VALUES ('YouTube', 'rtmp://a/live', '\\x00', 'ab12') RETURNING id"
            )
            job = await conn.fetchval(
                "INSERT INTO stream_jobs (name) VALUES ('Rerun') RETURNING id"
            )
            runs = ((-90, -70, None), (10, 20, "connection_refused"), (21, 50, None))
            for begin, end, failure in runs:  # the first ran before the stream: not marked
                await conn.execute(
                    "INSERT INTO stream_runs (job_id, target_id, started_at, ended_at, "
                    "failure_class) VALUES ($1, $2, $3, $4, $5)",
                    job,
                    target,
                    start + dt.timedelta(minutes=begin),
                    start + dt.timedelta(minutes=end),
                    failure,
                )
        marked = await (await dash.client.get("/streams/1000/stream-1")).text()
        for kind in (">up<", ">down<", ">restarted<", "connection_refused"):
            assert kind in marked, kind
        chart = json.loads(marked.split('id="stream-data">', 1)[1].split("</script>", 1)[0])
        drawn = [(m["t"] - start.timestamp(), m["label"]) for m in chart["markers"]]
        assert drawn == [
            (600, "YouTube up"),
            (1200, "YouTube down"),
            (1260, "YouTube restarted"),
            (3000, "YouTube down"),
        ]
        assert "linked-accounts" not in marked  # no linked account pushed to: no section

        # A linked Twitch account pushed to during the stream: Twitch's figures for it from
        # inside the stream only (an earlier push with 999 viewers is not this stream's).
        async with dash.db.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO stream_linked_accounts (target_id, user_id, login, display_name, "
                "via) VALUES ($1, '2000', 'alt_account', 'Alt_Account', 'login')",
                target,
            )
            minutes = [(-80 + i, 999) for i in range(5)] + [(10 + i, 7) for i in range(31)]
            minutes[20] = (25, 20)
            await conn.executemany(
                "INSERT INTO stream_linked_samples (job_id, target_id, user_id, at, ours_live, "
                "twitch_live, viewers) VALUES ($1, $2, '2000', $3, true, true, $4)",
                [(job, target, start + dt.timedelta(minutes=m), n) for m, n in minutes],
            )
        linked = await (await dash.client.get("/streams/1000/stream-1")).text()
        section = linked.split('id="linked-accounts"', 1)[1].split("</section>", 1)[0]
        row = section.split('data-account="alt_account">', 1)[1].split("</tr>", 1)[0]
        cells = [c.split(">", 1)[1] for c in row.split("</td>")[:-1]]
        assert cells[:6] == ["Alt_Account", "YouTube", "1", "0.50", "0.50", "20"], cells
        assert "not this channel's figures" in section and "999" not in section
        main = linked.split('id="linked-accounts"', 1)[0]
        assert "peak 40" in main  # the channel's own figures are untouched
        missing = await dash.client.get("/streams/1000/nope")
        assert missing.status == 404 and "No such stream session" in await missing.text()


async def test_stream_page_compares_with_the_five_streams_before(
    tmp_path: Path, db_url: str
) -> None:
    """Follows and peak viewers against the average of the 5 previous streams, in per cent; a
    sixth, older stream with far bigger figures is not part of the average."""
    async with dashboard(tmp_path, db_url) as dash:
        await signed_in(dash)
        await add_channel(dash.db)
        plan = [(7, 10, 1000)] + [(d, 2, 40) for d in (6, 5, 4, 3, 2)] + [(1, 3, 30)]
        items = []
        for days, follows, _ in plan:
            start = ago(days=days)
            items.append(notification("stream.online", start, id=f"s{days}"))
            items += [
                notification("channel.follow", start + dt.timedelta(minutes=1 + i))
                for i in range(follows)
            ]
            items.append(notification("stream.offline", start + dt.timedelta(minutes=30)))
        await store_events(dash.db, dash.settings.data_dir, items)
        for days, _, viewers in plan:
            await add_samples(dash.db, f"s{days}", ago(days=days), [viewers])

        html = await (await dash.client.get("/streams/1000/s1")).text()
        section = html.split('id="compared"', 1)[1].split("</section>", 1)[0]
        assert "average of the 5 streams before it" in section

        def row(label: str) -> list[str]:
            cells = section.split(f'data-figure="{label}">', 1)[1].split("</tr>", 1)[0]
            return [c.split(">", 1)[1] for c in cells.split("</td>")[:-1]]

        assert row("Follows") == ["Follows", "3", "2.0", "+50 %"]
        assert row("Peak viewers") == ["Peak viewers", "30", "40.0", "\u221225 %"]
        assert row("Bits")[3] == "±0 %"
        first = await (await dash.client.get("/streams/1000/s7")).text()
        assert "first stored stream: nothing to compare it with yet" in first


# ----------------------------------------------------------------------------- live feed


class SSE:
    """A minimal EventSource: reads `id:`/`event:`/`data:` frames from an open response."""

    def __init__(self, response: Any) -> None:
        self.response = response

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        frame: dict[str, str] = {}
        while True:
            line = (await asyncio.wait_for(self.response.content.readline(), timeout)).decode()
            line = line.rstrip("\r\n")
            if not line:
                if "data" in frame:
                    return {**frame, "json": json.loads(frame["data"])}
                continue
            field, _, value = line.partition(":")
            frame[field] = value.lstrip(" ")

    async def collect(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return [await self.next(timeout) for _ in range(count)]


async def test_live_feed_latency_resume_and_filter(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await signed_in(dash)
        await add_channel(dash.db)
        store_dir = dash.settings.data_dir / "store"
        await store_events(dash.db, store_dir, [notification("channel.follow", ago(minutes=5))])

        async with dash.client.get("/feed/events") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            feed = SSE(resp)
            backlog = await feed.next()
            assert backlog["event"] == "twitch" and backlog["json"]["type"] == "channel.follow"
            sent = time.monotonic()
            await store_events(
                dash.db, store_dir, [notification("channel.cheer", NOW, bits=42)], hub=dash.hub
            )
            live = await feed.next(timeout=1.0)
            assert live["json"]["text"].endswith("cheered 42 bits")
            assert time.monotonic() - sent < 1.0
            last_id = live["id"]

        # Disconnected: 30 events are committed meanwhile; resuming replays exactly those.
        missed = [
            notification("channel.follow", NOW, user_id=str(7000 + i), user_login=f"m{i}")
            for i in range(30)
        ]
        await store_events(dash.db, store_dir, missed, hub=dash.hub)
        async with dash.client.get("/feed/events", headers={"Last-Event-ID": last_id}) as resp:
            feed = SSE(resp)
            replayed = await feed.collect(30)
            # (events received in the same microsecond come in message_id order)
            assert sorted(r["json"]["id"] for r in replayed) == sorted(
                m.raw.message_id for m in missed
            )
            with pytest.raises(asyncio.TimeoutError):
                await feed.next(timeout=1.5)  # nothing repeated, nothing extra

        async with dash.client.get("/feed/events?types=cheers") as resp:
            feed = SSE(resp)
            assert (await feed.next())["json"]["type"] == "channel.cheer"  # backlog: cheers only
            await store_events(
                dash.db,
                store_dir,
                [notification("channel.follow", NOW), notification("channel.cheer", NOW, bits=7)],
                hub=dash.hub,
            )
            assert (await feed.next(timeout=2))["json"]["text"].endswith("cheered 7 bits")


async def test_a_chat_flood_costs_the_feed_no_row_reads_unwatched_and_few_watched(
    tmp_path: Path, db_url: str
) -> None:
    """Every commit wakes the feed; with no feed open it only moves its cursor, and with one
    open a burst of commits is read in a few queries, none missed."""
    async with dashboard(tmp_path, db_url) as dash:
        await signed_in(dash)
        await add_channel(dash.db)
        broadcaster = dash.client.app[FEED]
        store_dir = dash.settings.data_dir / "store"
        store_dir.mkdir(parents=True)

        async def commits(count: int, tag: str) -> None:
            async with EventStore(dash.db, store_dir, publish=dash.hub.events) as store:
                for i in range(count):  # one commit each, as a chat flood's batches come
                    store.submit(
                        notification("channel.follow", NOW, user_id=f"{tag}{i}", user_login=tag)
                    )
                    await store.flush()

        await commits(20, "u")
        await asyncio.sleep(0.3)
        assert broadcaster.reads == 0
        async with dash.client.get("/feed/events?types=cheers") as resp:
            feed = SSE(resp)
            await commits(20, "w")
            await store_events(
                dash.db, store_dir, [notification("channel.cheer", NOW, bits=5)], hub=dash.hub
            )
            assert (await feed.next(timeout=2))["json"]["text"].endswith("cheered 5 bits")
        assert 1 <= broadcaster.reads <= 8


async def test_feed_needs_a_session(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        resp = await dash.client.get("/feed/events", headers={"Accept": "text/event-stream"})
        assert resp.status == 401


# ----------------------------------------------------------------------------- errors


async def test_errors_end_on_pages_in_words(tmp_path: Path, db_url: str, monkeypatch) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await signed_in(dash)
        missing = await dash.client.get("/no/such/page")
        assert missing.status == 404 and "no page at this address" in await missing.text()
        api = await dash.client.get("/api/v1/nothing")
        assert api.status == 404 and "error" in await api.json()
        bad_id = await dash.client.get("/streams/1000/x/y")
        assert bad_id.status == 404
        wrong_method = await dash.client.delete(
            "/events", headers={"X-CSRF-Token": await dash.csrf("/")}
        )
        assert wrong_method.status == 405 and "Traceback" not in await wrong_method.text()

        # The database away: a page that says so, not a stack trace.
        async def refused(*_args: object) -> None:
            raise ConnectionRefusedError(111, "Connection refused")

        monkeypatch.setattr(UserStore, "session_user", refused)
        down = await dash.client.get("/events")
        text = await down.text()
        assert down.status == 503 and "cannot reach its database" in text and "<h1>" in text


async def test_settings_shows_what_a_revocation_asks_of_the_owner(
    tmp_path: Path, db_url: str
) -> None:
    class RunningBot:  # what TwitchBot.status() reports after a single revocation
        def status(self) -> list[dict[str, Any]]:
            return [
                {
                    "channel_id": CHANNEL,
                    "state": "reconnect Twitch",
                    "reason": "Twitch revoked channel.cheer: connect the channel again",
                }
            ]

    async with dashboard(tmp_path, db_url) as dash:
        await signed_in(dash)
        await add_channel(dash.db)
        page = await (await dash.client.get("/settings")).text()
        assert "capture-attention" not in page  # no bot running here: nothing claimed
        dash.client.app[SERVICES].twitch_overview.bot = RunningBot  # type: ignore[union-attr]
        page = await (await dash.client.get("/settings")).text()
        assert 'capture-attention">reconnect Twitch</strong>' in page
        assert "connect the channel again" in page


# ----------------------------------------------------------------------------- the streamer's clock


async def test_time_zone_chosen_at_setup_and_changed_in_settings(
    tmp_path: Path, db_url: str
) -> None:
    """Setup asks for the zone and the day's start; every time shows in that zone, named; Settings
    changes it at once, it survives a restart, and a wrong zone is refused in words."""
    from web_support import PASSWORD, csrf_of

    moment = dt.datetime(2026, 3, 10, 23, 30, tzinfo=dt.timezone.utc)  # 19:30 in New York
    async with dashboard(tmp_path, db_url) as dash:
        await add_channel(dash.db)
        await store_events(
            dash.db,
            dash.settings.data_dir,
            [notification("channel.follow", moment, user_login="zone_fan", user_name="Zone_Fan")],
        )
        token = dash.setup_token()
        page = await (await dash.client.get(f"/setup/{token}")).text()
        assert (
            'name="timezone"' in page and "data-guess" in page and 'name="day_start_hour"' in page
        )
        form = {"csrf_token": csrf_of(page), "login": "owner", "password": PASSWORD}
        wrong = await dash.client.post(
            f"/setup/{token}", data={**form, "confirm": PASSWORD, "timezone": "Mars/Olympus"}
        )
        assert wrong.status == 400 and "Mars/Olympus" in await wrong.text()
        made = await dash.client.post(
            f"/setup/{token}",
            data={
                **form,
                "confirm": PASSWORD,
                "timezone": "America/New_York",
                "day_start_hour": "6",
            },
            allow_redirects=False,
        )
        assert made.status == 303, await made.text()

        events = await (await dash.client.get("/events")).text()
        assert "When (America/New_York)" in events and "2026-03-10 19:30:00" in events
        assert "times in America/New_York" in events

        settings = await (await dash.client.get("/settings")).text()
        assert '<option value="America/New_York" selected>' in settings
        assert '<option value="6" selected>' in settings
        # Not configured for Twitch yet: the redirect URL to register, with the console's link.
        assert "https://dev.twitch.tv/console/apps/create" in settings
        assert "/auth/twitch/callback</code>" in settings
        csrf = csrf_of(settings)
        refused = await dash.client.post(
            "/settings/clock", data={"csrf_token": csrf, "timezone": "UTC+2", "day_start_hour": "0"}
        )
        assert refused.status == 400 and "pick one from the list" in await refused.text()
        changed = await dash.client.post(
            "/settings/clock",
            data={"csrf_token": csrf, "timezone": "Asia/Tokyo", "day_start_hour": "0"},
        )
        assert changed.status == 200 and "Times now show in Asia/Tokyo" in await changed.text()
        events = await (await dash.client.get("/events")).text()
        assert "When (Asia/Tokyo)" in events and "2026-03-11 08:30:00" in events

    async with dashboard(tmp_path, db_url) as again:  # a restart keeps the choice
        assert (await again.login("owner")).status == 303
        events = await (await again.client.get("/events")).text()
        assert "When (Asia/Tokyo)" in events and "2026-03-11 08:30:00" in events
