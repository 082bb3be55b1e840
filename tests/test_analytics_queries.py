"""Dashboard queries on hand-built history: a stream across midnight and the DST change."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from analytics_data import (
    COUNTERS,
    add_event,
    add_samples,
    naive_event_totals,
    naive_sessions,
    naive_spans,
    naive_viewers,
    raw_samples,
    z,
)

from streamerhub.analytics.periods import Calendar, calendar_period
from streamerhub.analytics.queries import load_period, stat_cards, time_series
from streamerhub.analytics.rollups import event_totals, viewer_totals
from streamerhub.analytics.sessions import get_session, list_sessions
from streamerhub.db import Database

PARIS = Calendar("Europe/Paris")


async def build_dst_night(conn) -> None:
    """Live 22:30 CET on 28 March 2026 → 03:30 CEST on the 29th: 4 real hours, 5 on the clock.

    Samples: 100 viewers every minute 21:31:00Z … 22:59:00Z (89), then 200 viewers every minute
    23:00:30Z … 01:29:30Z (150) with the polls of 00:10:30, 00:11:30, 00:12:30 missed.
    """
    await add_event(
        conn, "update", "c1", z("2026-03-28T20:00Z"), title="Night run", category="Elden Ring"
    )
    await add_event(conn, "online", "c1", z("2026-03-28T21:30Z"), stream_id="night")
    await add_samples(conn, "c1", "night", z("2026-03-28T21:31Z"), [100] * 89)
    missed = {z("2026-03-29T00:10:30Z"), z("2026-03-29T00:11:30Z"), z("2026-03-29T00:12:30Z")}
    first = z("2026-03-28T23:00:30Z")
    await add_samples(
        conn,
        "c1",
        "night",
        first,
        [None if first + timedelta(minutes=i) in missed else 200 for i in range(150)],
    )
    await add_event(
        conn, "update", "c1", z("2026-03-29T00:40Z"), title="Boss fights", category="Elden Ring"
    )
    await add_event(conn, "offline", "c1", z("2026-03-29T01:30Z"))
    # Events: the 29th on the streamer's clock starts at 23:00Z on the 28th.
    for at in ("2026-03-28T21:40Z", "2026-03-28T22:10Z", "2026-03-28T22:55Z"):
        await add_event(conn, "follow", "c1", z(at))
    for at in (
        "2026-03-28T23:30Z",
        "2026-03-29T00:05Z",
        "2026-03-29T01:00Z",
        "2026-03-29T09:00Z",
        "2026-03-29T21:59Z",
    ):
        await add_event(conn, "follow", "c1", z(at))
    await add_event(conn, "follow", "c1", z("2026-03-29T22:00Z"))  # the 30th already
    await add_event(conn, "sub", "c1", z("2026-03-28T23:10Z"))
    await add_event(conn, "sub", "c1", z("2026-03-29T00:20Z"))
    await add_event(conn, "gift", "c1", z("2026-03-29T00:30Z"), total=5)
    for i in range(5):  # its recipients
        await add_event(conn, "sub", "c1", z("2026-03-29T00:30Z"), user=f"lucky{i}", is_gift=True)
    await add_event(conn, "resub", "c1", z("2026-03-29T00:31Z"))
    await add_event(conn, "cheer", "c1", z("2026-03-28T22:00Z"), bits=100)
    await add_event(conn, "cheer", "c1", z("2026-03-29T01:15Z"), bits=250)
    await add_event(conn, "raid_in", "c1", z("2026-03-29T01:20Z"), viewers=42)
    await add_event(conn, "raid_out", "c1", z("2026-03-29T01:29Z"))
    await conn.executemany(
        "INSERT INTO twitch_totals (channel_id, taken_at, followers, subscribers, subscriber_points) "
        "VALUES ('c1', $1, $2, $3, $4)",
        [
            (z("2026-03-28T12:00Z"), 997, 48, 60),
            (z("2026-03-28T22:59Z"), 1000, 50, 62),
            (z("2026-03-29T21:45Z"), 1004, 55, 70),
        ],
    )
    await conn.execute(
        "INSERT INTO eventsub_gaps (channel_id, started_at, ended_at, reason) "
        "VALUES ('c1', '2026-03-29T10:00Z', '2026-03-29T10:20Z', 'connection_lost')"
    )


@pytest.fixture
async def night(db: Database):
    async with db.pool.acquire() as conn:
        await build_dst_night(conn)
        yield conn


async def test_cards_split_the_night_at_local_midnight_and_compare_with_the_day_before(
    night,
) -> None:
    cards = await stat_cards(
        night, "c1", calendar_period(PARIS, "day", date(2026, 3, 29)), now=z("2026-03-30T10:00Z")
    )
    c = {name: (card.value, card.previous) for name, card in cards.cards.items()}
    # Watch time by hand: the 28th has 88 × 60 s × 100 + the 22:59:00 sample's 60 s before
    # midnight × 100 = 534,000 viewer-seconds. The 29th has that sample's other 30 s × 100,
    # 145 × 60 s × 200, the 00:09:30 sample capped at 90 s × 200 and the last one cut by the
    # offline after 30 s × 200: 3,000 + 1,740,000 + 18,000 + 6,000 = 1,767,000.
    assert c["watch_hours"] == (round(1_767_000 / 3600, 2), round(534_000 / 3600, 2))
    assert c["hours_streamed"] == (2.5, 1.5)  # 00:00 CET → 03:30 CEST is 2.5 real hours
    assert c["viewers_avg"] == (round(1_767_000 / 8_850, 1), 100.0)
    assert c["viewers_peak"] == (200, 100)
    assert c["followers_gained"] == (5, 3)
    assert c["followers_total"] == (1004, 1000)
    assert c["followers_net"] == (4, 3)
    assert c["subs_new"] == (2, 0) and c["subs_gifted"] == (5, 0) and c["subs_resub"] == (1, 0)
    assert c["subs_total"] == (55, 50) and c["subs_points"] == (70, 62)
    assert c["bits"] == (250, 100) and c["raids"] == (1, 0) and c["raid_viewers"] == (42, 0)
    assert c["viewers_current"] == (0, None)  # offline now
    assert cards.cards["followers_gained"].change == 2
    assert cards.cards["bits"].change_pct == 150.0


async def test_hourly_chart_of_the_dst_day_has_no_2am_and_marks_gaps(night) -> None:
    series = await time_series(
        night, "c1", calendar_period(PARIS, "day", date(2026, 3, 29)), now=z("2026-03-30T10:00Z")
    )
    points = series.points
    assert len(points) == 23
    assert [p.label.strftime("%H%z") for p in points[:3]] == ["00+0100", "01+0100", "03+0200"]
    assert [p.hours_streamed for p in points[:4]] == [1.0, 1.0, 0.5, 0.0]
    assert [p.follows for p in points[:3]] == [1, 1, 1]
    assert sum(p.follows for p in points) == 5 and points[10].follows == 1  # 11:00 CEST
    assert all(p.follows == p.bits == p.watch_hours == 0 for p in points[4:10])  # zeros, present
    assert [p.gap for p in points[:3]] == [False, True, False]  # missed polls at 01:1x
    assert points[11].gap and not points[10].gap  # EventSub down 12:00
    assert {g.kind for g in series.gaps} == {"viewers", "events"}
    assert sum(p.watch_hours for p in points) == pytest.approx(1_767_000 / 3600, abs=0.05)
    assert points[-1].followers_total == 1004 and points[0].followers_total == 1000


async def test_a_stream_through_the_autumn_change_counts_the_repeated_hour_twice(
    db: Database,
) -> None:
    # 23:30 CEST on 24 Oct → 03:30 CET on the 25th: 5 real hours, 4 on the clock.
    async with db.pool.acquire() as conn:
        await add_event(conn, "online", "c1", z("2026-10-24T21:30Z"), stream_id="autumn")
        await add_samples(conn, "c1", "autumn", z("2026-10-24T21:31Z"), [60] * 299)
        await add_event(conn, "offline", "c1", z("2026-10-25T02:30Z"))
        series = await time_series(
            conn,
            "c1",
            calendar_period(PARIS, "day", date(2026, 10, 25)),
            now=z("2026-10-26T12:00Z"),
        )
        cards = await stat_cards(
            conn,
            "c1",
            calendar_period(PARIS, "day", date(2026, 10, 25)),
            now=z("2026-10-26T12:00Z"),
        )
    head = [(p.label.strftime("%H%z"), p.hours_streamed) for p in series.points[:5]]
    assert head == [
        ("00+0200", 1.0),
        ("01+0200", 1.0),
        ("02+0200", 1.0),
        ("02+0100", 1.0),
        ("03+0100", 0.5),
    ]
    assert len(series.points) == 25
    # Samples 22:00:00Z … 02:29:00Z on the 25th (270 of them, 60 s each) × 60 viewers.
    assert cards.cards["hours_streamed"].value == 4.5
    assert cards.cards["watch_hours"].value == round(270 * 60 * 60 / 3600, 2)
    assert cards.cards["hours_streamed"].previous == 0.5  # 23:30 → 00:00 CEST on the 24th


async def test_series_equals_naive_date_trunc_in_the_streamers_zone(db: Database) -> None:
    rng = random.Random(11)
    async with db.pool.acquire() as conn:
        for _ in range(300):
            at = z("2026-10-01T00:00Z") + timedelta(seconds=rng.randrange(0, 40 * 86400))
            await add_event(
                conn, rng.choice(["follow", "cheer", "sub"]), "c1", at, bits=rng.randrange(1, 99)
            )
        naive = {
            r["day"]: (r["follows"], r["bits"])
            for r in await conn.fetch(
                """SELECT date_trunc('day', at AT TIME ZONE 'America/New_York')::date AS day,
                      count(*) FILTER (WHERE f) AS follows, coalesce(sum(bits), 0) AS bits
                 FROM (SELECT followed_at AS at, true AS f, 0 AS bits FROM twitch_follows
                       UNION ALL SELECT occurred_at, false, bits FROM twitch_cheers) x GROUP BY 1"""
            )
        }
        cal = Calendar("America/New_York")
        series = await time_series(
            conn, "c1", calendar_period(cal, "month", date(2026, 11, 1)), now=z("2027-01-01T00:00Z")
        )
    assert len(series.points) == 30  # DST ends 1 Nov
    for p in series.points:
        assert (p.follows, p.bits) == naive.get(p.label.date(), (0, 0)), p.label


async def test_any_range_equals_naive_raw_rows(db: Database) -> None:
    rng = random.Random(3)
    base = z("2026-03-27T20:00Z")
    async with db.pool.acquire() as conn:
        await add_event(conn, "online", "c1", base, stream_id="s")
        for _ in range(250):
            await add_event(
                conn,
                rng.choice(["follow", "sub", "gift", "cheer", "raid_in", "resub"]),
                "c1",
                base + timedelta(seconds=rng.randrange(0, 2 * 86400)),
                bits=rng.randrange(1, 900),
                total=rng.randrange(1, 20),
            )
        await add_samples(
            conn,
            "c1",
            "s",
            base + timedelta(seconds=13),
            [rng.choice([None, rng.randrange(0, 900)]) for _ in range(600)],
            every_s=61,
        )
        samples = await raw_samples(conn, "c1")
        spans = naive_spans(samples, await naive_sessions(conn, "c1"))
        ranges = []
        for _ in range(25):
            a = base + timedelta(seconds=rng.randrange(-3600, 2 * 86400))
            ranges.append((a, a + timedelta(seconds=rng.randrange(1, 30 * 3600))))
        events = await event_totals(conn, "c1", ranges)
        viewers = await viewer_totals(conn, "c1", ranges)
        for (a, b), got_e, got_v in zip(ranges, events, viewers):
            assert got_e == await naive_event_totals(conn, "c1", a, b), (a, b)
            assert got_v == naive_viewers(samples, spans, a, b), (a, b)
    assert any(got["follows"] for got in events) and set(COUNTERS) == set(events[0])


async def test_sessions_list_and_detail(night) -> None:
    await add_event(night, "online", "c1", z("2026-03-30T18:00Z"), stream_id="evening")
    sessions = await list_sessions(night, "c1", now=z("2026-03-30T19:00Z"))
    assert [s.stream_id for s in sessions] == ["evening", "night"]
    evening, s = sessions
    assert evening.live and evening.duration_s == 3600 and evening.ended_at is None
    assert (s.started_at, s.ended_at, s.duration_s) == (
        z("2026-03-28T21:30Z"),
        z("2026-03-29T01:30Z"),
        4 * 3600,
    )
    assert (s.title, s.category) == ("Night run", "Elden Ring")
    assert (s.follows, s.subs_new, s.subs_gifted, s.subs_resub, s.bits, s.raids_in) == (
        6,
        2,
        5,
        1,
        350,
        1,
    )
    assert s.watch_hours == round(2_301_000 / 3600, 2) and s.viewers_peak == 200
    assert s.sampling_gaps == 1 and s.end_source == "offline"
    detail = await get_session(night, "c1", "night")
    assert [(c.title, c.at) for c in detail.changes] == [("Boss fights", z("2026-03-29T00:40Z"))]
    assert len(detail.samples) == 89 + 147
    assert detail.gaps == [(z("2026-03-29T00:11:00Z"), z("2026-03-29T00:13:30Z"), "missed_samples")]
    assert detail.to_dict()["changes"][0]["title"] == "Boss fights"
    assert await get_session(night, "c1", "nope") is None
    page2 = await list_sessions(night, "c1", limit=1, before=evening.started_at)
    assert [p.stream_id for p in page2] == ["night"]


async def test_all_time_period_starts_at_the_first_data(night) -> None:
    period = await load_period(night, PARIS, "c1", "all", now=z("2026-04-10T10:00Z"))
    assert period.bucket == "day"
    assert period.start == z("2026-03-27T23:00Z")  # 28 March, local
    cards = await stat_cards(night, "c1", period, now=z("2026-04-10T10:00Z"))
    assert cards.previous_window is None
    assert cards.cards["followers_gained"].value == 9
    assert cards.cards["watch_hours"].value == round(2_301_000 / 3600, 2)
    assert cards.to_dict()["cards"]["bits"]["value"] == 350
