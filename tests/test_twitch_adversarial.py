"""Twitch as it really behaves, through the fake's adversarial knobs: answers lost after the work
was done, client types, grant loss, EventSub-limit 429s, read-or-manage scopes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from typing import Any, Awaitable, Callable

import pytest
from conftest import make_settings
from test_eventsub import EVERY_TYPE, Rig, rig, wait_until

from streamerhub.bot.helix import Helix, HelixError
from streamerhub.bot.link import LinkError, TwitchChannelLink
from streamerhub.bot.oauth import ClientMisconfigured, OAuth, TokenRevoked
from streamerhub.bot.tokens import TokenStore, load_channel_token
from streamerhub.commands.check import check_twitch_client
from streamerhub.commands.twitch import _merge, render_status
from streamerhub.events.text import BITS_AGGREGATE, describe, types_for
from streamerhub.fake_twitch import sample_event
from streamerhub.fake_twitch.bits import leaderboard, period_bounds

__all__ = ["rig"]  # the fixture, imported for pytest


def _link(rig: Rig) -> TwitchChannelLink:
    settings = make_settings(
        rig.tmp,
        STREAMERHUB_TWITCH_CLIENT_ID=rig.fake.client_id,
        STREAMERHUB_TWITCH_API_URL=rig.fake.api_url,
        STREAMERHUB_TWITCH_AUTH_URL=rig.fake.auth_url,
    )
    # No bot in this process: the case where the link would once refresh on its own.
    return TwitchChannelLink(settings, rig.db, rig.keyring, lambda: None)


def _is(rig: Rig, sql: str, expected: object) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await rig.value(sql) == expected

    return check


async def _valid_at_twitch(rig: Rig, access_token: str) -> bool:
    async with rig.http.get(
        f"{rig.fake.auth_url}/validate", headers={"Authorization": f"OAuth {access_token}"}
    ) as resp:
        return resp.status == 200


async def test_a_subscription_applied_but_unanswered_is_adopted_not_dead_lettered(rig: Rig) -> None:
    await rig.connect()
    # Twitch creates the subscription, the answer is lost (503): the retried POST meets 409.
    await rig.control(
        "fail",
        {
            "path": "/helix/eventsub/subscriptions",
            "method": "POST",
            "status": 503,
            "applied": True,
            "count": 4,
        },
    )
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    await wait_until(
        _is(rig, "SELECT count(*) FROM eventsub_subscriptions WHERE twitch_id IS NULL", 0),
        5,
        "every stored subscription has its Twitch id",
    )
    ids = await rig.deliver(*((t, sample_event(t)[1]) for t in EVERY_TYPE))
    await wait_until(_is(rig, "SELECT count(*) FROM twitch_events", len(ids)), 10, "all stored")
    assert await rig.value("SELECT count(*) FROM dead_letters") == 0
    assert (await rig.control("state"))["counters"]["faults_injected"] == 4


async def test_a_missing_client_secret_keeps_the_grant_and_says_what_to_fix(rig: Rig) -> None:
    await rig.connect()
    rig.fake.state.settings.client_type = "confidential"
    store = TokenStore(rig.db, rig.keyring)
    token = await load_channel_token(
        store, OAuth(rig.http, rig.fake.auth_url, rig.fake.client_id), "1000"
    )
    with pytest.raises(ClientMisconfigured) as caught:
        await token.refresh(token.access_token())
    assert "client_secret" in str(caught.value) and "STREAMERHUB_TWITCH_CLIENT_SECRET" in str(
        caught.value
    )
    assert await rig.value("SELECT status FROM twitch_channels") == "connected"
    # With the secret in place the same grant refreshes: nothing had to be logged in again.
    fixed = OAuth(rig.http, rig.fake.auth_url, rig.fake.client_id, "the-secret")
    again = await load_channel_token(store, fixed, "1000")
    assert await again.refresh(again.access_token()) != rig.tokens["1000"]["access_token"]


async def test_the_login_and_check_say_a_confidential_app_needs_its_secret(rig: Rig) -> None:
    settings = make_settings(rig.tmp, STREAMERHUB_TWITCH_CLIENT_ID="abc")
    problem = settings.twitch.client_problem()
    assert problem and "client_secret" in problem and "Confidential" in problem
    public = make_settings(
        rig.tmp, STREAMERHUB_TWITCH_CLIENT_ID="abc", STREAMERHUB_TWITCH_CLIENT_TYPE="public"
    )
    assert public.twitch.client_problem() is None
    line = check_twitch_client(settings).line()
    assert line.startswith("WARN") and "STREAMERHUB_TWITCH_CLIENT_SECRET" in line


async def test_an_eventsub_limit_429_is_not_waited_out_like_a_rate_limit(rig: Rig) -> None:
    await rig.connect()
    token = await load_channel_token(
        TokenStore(rig.db, rig.keyring),
        OAuth(rig.http, rig.fake.auth_url, rig.fake.client_id),
        "1000",
    )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    helix = Helix(rig.http, rig.fake.api_url, rig.fake.client_id, token, sleep=sleep)
    await rig.control(
        "fail", {"path": "/helix/eventsub/subscriptions", "status": 429, "eventsub_limit": True}
    )
    with pytest.raises(HelixError) as caught:
        await helix.request("POST", "/eventsub/subscriptions", json={})
    assert caught.value.status == 429 and "cost" in caught.value.message
    assert waits == []
    # The bucket being empty (Ratelimit-Remaining: 0) is still waited out.
    await rig.control("fail", {"path": "/helix/users", "status": 429})
    assert await helix.me() is not None and len(waits) == 1


async def test_a_manage_scope_serves_where_twitch_accepts_read_or_manage(rig: Rig) -> None:
    await rig.connect(scopes=["channel:manage:polls", "channel:manage:redemptions"])
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    rows = dict(
        (r["subscription_type"], r["status"])
        for r in await rig.fetch("SELECT subscription_type, status FROM eventsub_subscriptions")
    )
    assert rows["channel.poll.begin"] == "enabled"
    assert rows["channel.channel_points_custom_reward_redemption.add"] == "enabled"
    assert rows["channel.cheer"] == "missing_scope"


async def test_a_revoked_grant_is_checked_at_once_with_a_gap_per_type(rig: Rig) -> None:
    grant = await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    # The user disconnects the app on Twitch: revocation frames, the grant dead.
    await rig.control(
        "token",
        {"access_token": grant["access_token"], "revoked": True, "revocation_frames": True},
    )
    # Within seconds, not at the next hourly validation.
    await wait_until(
        _is(rig, "SELECT status FROM twitch_channels", "disconnected"),
        5,
        "channel disconnected after the revocation",
    )
    reasons = [r["reason"] for r in await rig.fetch("SELECT reason FROM eventsub_gaps")]
    assert any(r.startswith("channel.follow: subscription revoked") for r in reasons)
    assert any(r.startswith("stream.online: subscription revoked") for r in reasons)
    assert bot.status()[0]["state"] == "disconnected"


async def test_a_withdrawn_version_or_single_revocation_is_shown_with_what_to_do(rig: Rig) -> None:
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    await rig.control(
        "revoke", {"subscription_type": "channel.cheer", "status": "authorization_revoked"}
    )
    await wait_until(lambda: bot.status()[0]["state"] == "reconnect Twitch", 5, "shown")
    await rig.control(
        "revoke", {"subscription_type": "channel.goal.begin", "status": "version_removed"}
    )
    await wait_until(lambda: bot.status()[0]["state"] == "update StreamerHub", 5, "shown")
    assert "channel.goal.begin" in bot.status()[0]["reason"]
    await wait_until(
        _is(rig, "SELECT count(*) FROM eventsub_gaps WHERE ended_at IS NULL", 2),
        5,
        "one open gap per revoked type",
    )
    # The grant itself is fine: the channel keeps capturing the other types.
    await rig.deliver(("channel.follow", sample_event("channel.follow")[1]))
    await wait_until(_is(rig, "SELECT count(*) FROM twitch_follows", 1), 5, "stored")


async def test_disconnecting_a_channel_revokes_its_grant_at_twitch(rig: Rig) -> None:
    grant = await rig.connect()
    assert await _valid_at_twitch(rig, grant["access_token"])
    await _link(rig).disconnect("1000")
    assert await rig.value("SELECT status FROM twitch_channels") == "disconnected"
    assert not await _valid_at_twitch(rig, grant["access_token"])


async def test_the_category_search_never_refreshes_the_grant_behind_the_bot(rig: Rig) -> None:
    grant = await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    runner = bot.runners["1000"]
    await rig.control("token", {"access_token": grant["access_token"], "expired": True})
    with pytest.raises(LinkError):
        await _link(rig).search_categories("Just Chatting")
    # The bot, the grant's one refresher, still refreshes with the refresh token it holds.
    await runner.token.refresh(grant["access_token"])
    assert runner.token.refreshes == 1
    assert await rig.value("SELECT status FROM twitch_channels") == "connected"
    with pytest.raises(TokenRevoked):  # and the old refresh token is retired at Twitch
        await OAuth(rig.http, rig.fake.auth_url, rig.fake.client_id).refresh(
            "1000", grant["refresh_token"]
        )


def _stamp(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_backfill_recovers_what_helix_keeps_and_dedupes_against_live(rig: Rig) -> None:
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    now = dt.datetime.now(dt.timezone.utc)
    _, online = sample_event("stream.online", id="s1", started_at=_stamp(now))
    _, update = sample_event("channel.update", title="old title", category_id="509658")
    _, begun = sample_event("channel.poll.begin", id="p1")
    await rig.deliver(
        ("stream.online", online), ("channel.update", update), ("channel.poll.begin", begun)
    )
    await wait_until(_is(rig, "SELECT count(*) FROM twitch_events", 3), 5, "live events stored")
    await bot.stop()  # the gap: everything below happens while nobody listens

    gap_start = dt.datetime.now(dt.timezone.utc)
    await rig.control("live", {"live": False})  # s1 ends: Twitch keeps its archive
    await rig.control("live", {"live": True})  # a whole stream inside the gap
    await asyncio.sleep(1.1)
    await rig.control("live", {"live": False, "title": "new title"})
    in_gap = _stamp(gap_start + dt.timedelta(seconds=1))
    choices = [{"id": "c1", "title": "yes", "votes": 3, "channel_points_votes": 0, "bits_votes": 0}]
    poll = {"title": "Q?", "choices": choices, "duration": 60, "started_at": in_gap}
    await rig.control(
        "history",
        {
            "polls": [
                {"id": "p2", "status": "COMPLETED", "ended_at": in_gap, **poll},
                {
                    **poll,
                    "id": "p1",
                    "status": "TERMINATED",
                    "ended_at": in_gap,
                    "started_at": _stamp(now),
                },
            ],
            "predictions": [
                {
                    "id": "r1",
                    "title": "Win?",
                    "outcomes": [
                        {
                            "id": "o1",
                            "title": "yes",
                            "users": 2,
                            "channel_points": 500,
                            "color": "BLUE",
                            "top_predictors": [],
                        }
                    ],
                    "prediction_window": 30,
                    "status": "RESOLVED",
                    "winning_outcome_id": "o1",
                    "created_at": in_gap,
                    "locked_at": in_gap,
                    "ended_at": in_gap,
                }
            ],
        },
    )
    await asyncio.sleep(2)  # the gap lasts longer than the streams it hides
    again = await rig.start_bot()
    await rig.wait_subscribed(again)
    await wait_until(
        _is(rig, "SELECT count(*) FROM eventsub_gaps WHERE backfilled_at IS NULL", 0), 10, "done"
    )
    rows = await rig.fetch(
        "SELECT e.subscription_type, e.backfilled, e.payload->'event'->>'id' AS id, e.occurred_at"
        "  FROM twitch_events e ORDER BY e.subscription_type, e.payload->'event'->>'id', e.backfilled"
    )
    got = [(r["subscription_type"], r["id"], r["backfilled"]) for r in rows]
    assert ("channel.poll.begin", "p1", False) in got  # live, not doubled by the backfill
    assert ("channel.poll.begin", "p1", True) not in got
    for recovered in (
        ("channel.poll.end", "p1", True),
        ("channel.poll.begin", "p2", True),
        ("channel.poll.end", "p2", True),
        ("channel.prediction.begin", "r1", True),
        ("channel.prediction.lock", "r1", True),
        ("channel.prediction.end", "r1", True),
    ):
        assert recovered in got, recovered
    streams = await rig.fetch(
        "SELECT kind, stream_id, s.occurred_at, e.backfilled FROM twitch_streams s"
        "  JOIN twitch_events e USING (message_id) ORDER BY s.occurred_at, kind DESC"
    )
    onlines = sorted(
        (s["stream_id"] == "s1", s["backfilled"]) for s in streams if s["kind"] == "online"
    )
    assert onlines == [(False, True), (True, False)]  # the hidden stream, and s1 seen live
    offlines = [s for s in streams if s["kind"] == "offline"]
    assert len(offlines) == 2 and all(s["backfilled"] for s in offlines)
    gap_end = await rig.value("SELECT max(ended_at) FROM eventsub_gaps")
    # Each end comes from its archive, not from the gap's end two seconds later.
    assert all(s["occurred_at"] < gap_end - dt.timedelta(seconds=1) for s in offlines)
    updates = await rig.fetch(
        "SELECT title, e.backfilled FROM twitch_channel_updates u JOIN twitch_events e"
        "  USING (message_id) ORDER BY u.occurred_at"
    )
    assert [(u["title"], u["backfilled"]) for u in updates] == [
        ("old title", False),
        ("new title", True),
    ]
    assert await rig.value("SELECT count(*) FROM dead_letters") == 0


async def test_a_version_twitch_withdrew_says_update_streamerhub(rig: Rig) -> None:
    rig.fake.state.settings.withdrawn = ("channel.goal.begin@1",)
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    status = bot.status()[0]
    assert status["state"] == "update StreamerHub" and "channel.goal.begin" in status["reason"]
    assert status["subscriptions"]["revoked"] == ["channel.goal.begin"]
    detail = await rig.value(
        "SELECT detail FROM eventsub_subscriptions WHERE subscription_type = 'channel.goal.begin'"
    )
    assert "update StreamerHub" in detail


async def test_the_daemon_keeps_a_channel_whose_refresh_lacks_the_secret_and_says_why(
    rig: Rig,
) -> None:
    grant = await rig.connect()
    rig.fake.state.settings.client_type = "confidential"
    await rig.control("token", {"access_token": grant["access_token"], "expired": True})
    bot = await rig.start_bot()  # no client_secret configured

    def waiting() -> bool:
        status = bot.status()
        return bool(status) and status[0]["state"] == "waiting for Twitch"

    await wait_until(waiting, 10, "channel waiting with the reason")
    assert "client_secret" in bot.status()[0]["reason"]
    assert await rig.value("SELECT status FROM twitch_channels") == "connected"
    assert await rig.value("SELECT refresh_token_sealed IS NOT NULL FROM twitch_channels")


async def test_twitch_login_without_the_secret_says_what_to_set(rig: Rig) -> None:
    (rig.tmp / "empty.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMERHUB_")} | {
        "STREAMERHUB_TWITCH_CLIENT_ID": "abc",
        "STREAMERHUB_TWITCH_AUTH_URL": rig.fake.auth_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamerhub",
        "twitch",
        "login",
        "--config",
        str(rig.tmp / "empty.toml"),
        "--data-dir",
        str(rig.tmp / "login-data"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    said = out.decode() + err.decode()
    assert proc.returncode != 0
    assert "STREAMERHUB_TWITCH_CLIENT_SECRET" in said and "Traceback" not in said


def test_twitch_status_shows_what_a_revocation_asks_of_the_user() -> None:
    row = {
        "channel_id": "1000",
        "display_name": "Streamer",
        "login": "streamer",
        "status": "connected",
        "status_reason": None,
        "subscriptions": {"enabled": 25, "missing_scope": [], "revoked": ["channel.cheer"]},
        "events_today": 3,
    }
    runtime = {"1000": {"state": "reconnect Twitch", "reason": "Twitch revoked channel.cheer"}}
    text = render_status([_merge(row, runtime)], daemon_running=True)
    assert "connection: reconnect Twitch (Twitch revoked channel.cheer)" in text
    assert "revoked: channel.cheer" in text


async def test_a_transport_gap_is_bounded_by_twitchs_timestamps_not_the_readers_clock(
    rig: Rig,
) -> None:
    skew = dt.timedelta(seconds=40)
    rig.fake.state.settings.clock_skew = skew.total_seconds()  # Twitch's clock is 40 s ahead
    await rig.connect()
    bot = await rig.start_bot()
    await rig.wait_subscribed(bot)
    client = bot.runners["1000"].client
    _, follow = sample_event("channel.follow", user_id="900", user_login="a", user_name="A")
    before = dt.datetime.now(dt.timezone.utc)
    await rig.deliver(("channel.follow", follow))
    await wait_until(_is(rig, "SELECT count(*) FROM twitch_follows", 1), 5, "follow stored")
    await rig.control("close", {"code": 4000, "reason": "internal server error"})
    dropped = dt.datetime.now(dt.timezone.utc)
    await wait_until(lambda: client.stats.gaps == 1, 5, "gap noticed")
    await rig.wait_subscribed(bot)
    back = dt.datetime.now(dt.timezone.utc)
    await wait_until(
        _is(rig, "SELECT count(*) FROM eventsub_gaps WHERE ended_at IS NOT NULL", 1), 10, "ended"
    )
    started_at, ended_at = (await rig.fetch("SELECT started_at, ended_at FROM eventsub_gaps"))[0]
    # From the last frame read before the drop (the follow) to the first after resubscribing
    # (a keepalive within 3 s), both as Twitch stamped them: not the reader's clock, 40 s behind.
    slack = dt.timedelta(seconds=0.5)
    assert before + skew - slack <= started_at <= dropped + skew + slack
    assert back + skew - slack <= ended_at <= back + skew + dt.timedelta(seconds=3) + slack
    assert client.stats.last_gap is not None and client.stats.last_gap.ended_at == ended_at


async def test_bits_missed_in_a_gap_come_back_once_as_a_total_per_user_and_day(rig: Rig) -> None:
    def cheer(user: str, name: str, bits: int, anonymous: bool = False) -> tuple[str, dict]:
        who = {} if anonymous else {"user_id": user, "user_login": name.lower(), "user_name": name}
        event = sample_event("channel.cheer", bits=bits, is_anonymous=anonymous, **who)[1]
        return ("channel.cheer", event)

    async def restart() -> Any:
        bot = await rig.start_bot()
        await rig.wait_subscribed(bot)
        await wait_until(
            _is(rig, "SELECT count(*) FROM eventsub_gaps WHERE backfilled_at IS NULL", 0), 10, "bf"
        )
        return bot

    aggregates = (
        "SELECT e.payload->'event'->>'user_id', (e.payload->'event'->>'bits')::int, e.backfilled"
        "  FROM twitch_events e WHERE subscription_type = 'streamerhub.bits.aggregate'"
        " ORDER BY 1, 2"
    )
    await rig.connect()
    bot = await restart()
    await rig.deliver(cheer("700", "Ann", 100))
    await wait_until(_is(rig, "SELECT count(*) FROM twitch_cheers", 1), 5, "live cheer stored")
    await bot.stop()
    # While nobody listens: Ann cheers 50 more, Bob 300, someone 1000 anonymously.
    await rig.deliver(cheer("700", "Ann", 50), cheer("701", "Bob", 300), cheer("", "", 1000, True))
    bot = await restart()
    rows = [tuple(r) for r in await rig.fetch(aggregates)]
    assert rows == [("700", 50, True), ("701", 300, True)]  # Ann's live 100 is not counted twice
    await bot.stop()  # a second gap the same day: only what grew beyond what is stored
    await rig.deliver(cheer("701", "Bob", 20))
    bot = await restart()
    rows = [tuple(r) for r in await rig.fetch(aggregates)]
    assert rows == [("700", 50, True), ("701", 20, True), ("701", 300, True)]
    await bot.stop()  # and a gap with nothing missed adds nothing
    bot = await restart()
    assert len(await rig.fetch(aggregates)) == 3
    # Listed with the cheers as a total, never counted as a cheer.
    assert await rig.value("SELECT count(*) FROM twitch_cheers") == 1
    payload = await rig.value(
        "SELECT payload->'event' FROM twitch_events"
        " WHERE subscription_type = 'streamerhub.bits.aggregate' ORDER BY payload->'event'->>'user_id' LIMIT 1"
    )
    line = describe(BITS_AGGREGATE, json.loads(payload) if isinstance(payload, str) else payload)
    assert "Ann: 50 bits missed in a gap" in line and "single cheers not recoverable" in line
    assert BITS_AGGREGATE in types_for(["cheers"])
    assert await rig.value("SELECT count(*) FROM dead_letters") == 0
    await bot.stop()


def test_the_fake_bits_leaderboard_keeps_twitchs_pacific_periods() -> None:
    utc = dt.timezone.utc
    # 07:59 UTC on 2 Dec is still 1 Dec in Los Angeles (PST, UTC-8); 06:59 in July (PDT).
    cheers = [
        {
            "user_id": "1",
            "user_login": "a",
            "user_name": "A",
            "bits": 5,
            "at": "2026-12-02T07:59:00Z",
        },
        {
            "user_id": "2",
            "user_login": "b",
            "user_name": "B",
            "bits": 7,
            "at": "2026-12-02T08:00:00Z",
        },
        {
            "user_id": "1",
            "user_login": "a",
            "user_name": "A",
            "bits": 1,
            "at": "2026-12-03T07:00:00Z",
        },
    ]
    lines, span = leaderboard(cheers, "day", dt.datetime(2026, 12, 2, 12, tzinfo=utc))
    assert span == {"started_at": "2026-12-02T08:00:00Z", "ended_at": "2026-12-03T08:00:00Z"}
    assert [(x["user_id"], x["rank"], x["score"]) for x in lines] == [("2", 1, 7), ("1", 2, 1)]
    lines, _ = leaderboard(cheers, "all", dt.datetime(2000, 1, 1, tzinfo=utc))
    assert [(x["user_id"], x["score"]) for x in lines] == [("2", 7), ("1", 6)]
    assert period_bounds("day", dt.datetime(2026, 7, 1, 7, tzinfo=utc))[0].hour == 7
    week = period_bounds("week", dt.datetime(2026, 12, 2, 12, tzinfo=utc))  # a Wednesday
    assert week == (
        dt.datetime(2026, 11, 30, 8, tzinfo=utc),
        dt.datetime(2026, 12, 7, 8, tzinfo=utc),
    )
    # The day DST ends in Los Angeles has 25 hours.
    start, end = period_bounds("day", dt.datetime(2026, 11, 1, 12, tzinfo=utc))
    assert end - start == dt.timedelta(hours=25)
