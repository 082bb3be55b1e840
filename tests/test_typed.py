"""Typed rows as PostgreSQL projects them from the raw rows: every column a user sees, every type."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from test_events import EVENTS, frame_text, payload

from streamerhub.db import Database
from streamerhub.events.batch import rebuild_typed
from streamerhub.events.frames import parse_frame
from streamerhub.events.normalise import normalise
from streamerhub.events.store import EventStore
from streamerhub.events.typed import TABLE_OF, TYPED_TABLES


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


async def store_all(db: Database, folder: Path, frames: dict[str, str]) -> dict[str, dict]:
    """Store the frames (message id → text); the typed row of each message id."""
    async with EventStore(db, folder) as store:
        for text in frames.values():
            store.submit(parse_frame(text))
        await store.drain()
    rows: dict[str, dict] = {}
    async with db.pool.acquire() as conn:
        for table in TYPED_TABLES:
            for row in await conn.fetch(f"SELECT * FROM {table}"):
                rows[row["message_id"]] = {"table": table, **dict(row)}
    return rows


@pytest.fixture
async def typed(db: Database, tmp_path: Path) -> dict[str, dict]:
    """Every type of the reference stored once: subscription type → its typed row."""
    rows = await store_all(db, tmp_path, {t: frame_text(t, message_id=t) for t in EVENTS})
    return rows


async def test_every_type_lands_in_the_table_it_names(typed: dict[str, dict]) -> None:
    assert set(typed) == set(EVENTS)
    for sub_type, row in typed.items():
        assert row["table"] == TABLE_OF[sub_type], sub_type
        assert row["channel_id"] == "1337", sub_type


async def test_subscriptions(typed: dict[str, dict]) -> None:
    gift = typed["channel.subscription.gift"]
    assert {
        k: gift[k]
        for k in (
            "kind",
            "user_id",
            "user_name",
            "is_anonymous",
            "is_gift",
            "gift_total",
            "tier",
            "cumulative_total",
        )
    } == {
        "kind": "gift",
        "user_id": None,
        "user_name": None,
        "is_anonymous": True,
        "is_gift": True,
        "gift_total": 5,
        "tier": "1000",
        "cumulative_total": None,
    }
    resub = typed["channel.subscription.message"]
    assert (
        resub["kind"],
        resub["message"],
        resub["cumulative_months"],
        resub["streak_months"],
        resub["duration_months"],
    ) == ("resub", "15 months, still here!", 15, None, 1)
    sub, end = typed["channel.subscribe"], typed["channel.subscription.end"]
    assert (sub["kind"], sub["tier"], sub["is_gift"], sub["user_login"], sub["message"]) == (
        "sub",
        "2000",
        True,
        "cool_viewer",
        None,
    )
    assert (end["kind"], end["tier"], end["is_gift"], end["gift_total"]) == (
        "end",
        "3000",
        False,
        None,
    )
    assert sub["occurred_at"] == at("2026-03-01T20:15:42.123456Z")


async def test_follow_cheer_raid(typed: dict[str, dict]) -> None:
    follow = typed["channel.follow"]
    assert (follow["user_id"], follow["user_name"], follow["backfilled"]) == (
        "4242",
        "Cool_Viewer",
        False,
    )
    assert follow["followed_at"] == at("2026-03-01T20:15:41.987654Z")
    cheer = typed["channel.cheer"]
    assert (cheer["bits"], cheer["message"], cheer["is_anonymous"], cheer["user_login"]) == (
        100,
        "Cheer100 gg",
        False,
        "cool_viewer",
    )
    raid = typed["channel.raid"]
    assert (
        raid["from_user_id"],
        raid["from_user_name"],
        raid["to_user_login"],
        raid["viewers"],
    ) == ("9001", "Raider", "streamer", 420)


async def test_streams_and_channel_updates(typed: dict[str, dict]) -> None:
    online, offline = typed["stream.online"], typed["stream.offline"]
    assert (
        online["kind"],
        online["stream_id"],
        online["stream_type"],
        online["started_at"],
        online["reconciled"],
    ) == ("online", "stream-77", "live", at("2026-03-01T20:00:01.5Z"), False)
    assert (offline["kind"], offline["stream_id"], offline["started_at"]) == ("offline", None, None)
    update = typed["channel.update"]
    assert (
        update["title"],
        update["language"],
        update["category_name"],
        update["content_classification_labels"],
    ) == ("Ranked grind", "en", "VALORANT", ["ProfanityVulgarity"])


async def test_redemptions(typed: dict[str, dict]) -> None:
    add = typed["channel.channel_points_custom_reward_redemption.add"]
    update = typed["channel.channel_points_custom_reward_redemption.update"]
    assert {
        k: add[k]
        for k in (
            "kind",
            "redemption_id",
            "user_input",
            "status",
            "reward_id",
            "reward_title",
            "reward_cost",
            "reward_prompt",
        )
    } == {
        "kind": "add",
        "redemption_id": "red-1",
        "user_input": "hello",
        "status": "unfulfilled",
        "reward_id": "r-1",
        "reward_title": "Hydrate!",
        "reward_cost": 500,
        "reward_prompt": "Drink water",
    }
    assert add["redeemed_at"] == at("2026-03-01T20:15:40.5Z")
    assert (update["kind"], update["status"], update["reward_cost"]) == ("update", "fulfilled", 500)


async def test_hype_trains_polls_predictions_goals(typed: dict[str, dict]) -> None:
    begin, end = typed["channel.hype_train.begin"], typed["channel.hype_train.end"]
    assert {
        k: begin[k]
        for k in (
            "phase",
            "train_id",
            "level",
            "goal",
            "total",
            "train_type",
            "is_shared_train",
            "started_at",
        )
    } == {
        "phase": "begin",
        "train_id": "train-1",
        "level": 1,
        "goal": 1800,
        "total": 1750,
        "train_type": "golden_kappa",
        "is_shared_train": False,
        "started_at": at("2026-03-01T20:10:00Z"),
    }
    assert (end["ended_at"], end["progress"], end["goal"]) == (
        at("2026-03-01T20:19:00Z"),
        None,
        None,
    )
    poll_end, progress = typed["channel.poll.end"], typed["channel.poll.progress"]
    assert (poll_end["phase"], poll_end["status"], poll_end["ended_at"]) == (
        "end",
        "completed",
        at("2026-03-01T20:05:00Z"),
    )
    assert (progress["poll_id"], progress["choices"][0]["votes"], progress["status"]) == (
        "poll-1",
        5,
        None,
    )
    lock, resolved = typed["channel.prediction.lock"], typed["channel.prediction.end"]
    assert (lock["phase"], lock["winning_outcome_id"]) == ("lock", None)
    assert (resolved["winning_outcome_id"], resolved["status"], resolved["outcomes"][0]["id"]) == (
        "o1",
        "resolved",
        "o1",
    )
    goal = typed["channel.goal.end"]
    assert (
        goal["phase"],
        goal["goal_type"],
        goal["is_achieved"],
        goal["current_amount"],
        goal["target_amount"],
        goal["description"],
    ) == ("end", "follower", True, 640, 1000, "Road to 1000")
    assert typed["channel.goal.begin"]["is_achieved"] is None


async def test_absent_and_null_optional_fields(db: Database, tmp_path: Path) -> None:
    anonymous_cheer = {
        **EVENTS["channel.cheer"][1],
        "is_anonymous": True,
        "user_id": None,
        "user_login": None,
        "user_name": None,
        "message": None,
    }
    bare_update = {
        "broadcaster_user_id": "1337",
        "title": "Just chatting",
        "content_classification_labels": None,
    }
    rows = await store_all(
        db,
        tmp_path,
        {
            "c": frame_text("channel.cheer", "c", anonymous_cheer),
            "u": frame_text("channel.update", "u", bare_update),
        },
    )
    assert (rows["c"]["user_id"], rows["c"]["is_anonymous"], rows["c"]["message"]) == (
        None,
        True,
        None,
    )
    assert (rows["u"]["language"], rows["u"]["content_classification_labels"]) == (None, [])


async def test_an_event_built_from_a_dict_is_projected_alike(db: Database, tmp_path: Path) -> None:
    """Backfill and spool replay hand the store a payload, not a frame: same typed row."""
    async with EventStore(db, tmp_path) as store:
        store.submit(parse_frame(frame_text("channel.cheer", "from-frame")))
        store.submit(
            normalise(
                "from-dict",
                "channel.cheer",
                "1",
                "2026-03-01T20:15:42.123456Z",
                payload("channel.cheer"),
            )
        )
        await store.drain()
    async with db.pool.acquire() as conn:
        rows = {r["message_id"]: dict(r) for r in await conn.fetch("SELECT * FROM twitch_cheers")}
        raw = await conn.fetch("SELECT payload FROM twitch_events ORDER BY message_id")
    assert {k: v for k, v in rows["from-frame"].items() if k != "message_id"} == {
        k: v for k, v in rows["from-dict"].items() if k != "message_id"
    }
    assert raw[0]["payload"] == raw[1]["payload"] == payload("channel.cheer")


async def test_rebuild_gives_the_same_rows(
    db: Database, tmp_path: Path, typed: dict[str, Any]
) -> None:
    assert await rebuild_typed(db) == (len(EVENTS), 0)
    async with db.pool.acquire() as conn:
        for sub_type, row in typed.items():
            again = await conn.fetchrow(
                f"SELECT * FROM {row['table']} WHERE message_id = $1", sub_type
            )
            assert {"table": row["table"], **dict(again)} == row, sub_type


async def test_a_time_postgres_cannot_read_is_dead_lettered_alone(
    db: Database, tmp_path: Path
) -> None:
    """Python accepts an ISO week date, PostgreSQL does not: the batch is split until that row
    is found, which becomes a dead letter saying why; the others are stored."""
    week_date = {**EVENTS["channel.follow"][1], "followed_at": "2026-W09-7T20:15:41+00:00"}
    rows = await store_all(
        db,
        tmp_path,
        {
            **{f"c{n}": frame_text("channel.cheer", f"c{n}") for n in range(5)},
            "odd": frame_text("channel.follow", "odd", week_date),
        },
    )
    assert sorted(rows) == [f"c{n}" for n in range(5)]
    async with db.pool.acquire() as conn:
        letter = await conn.fetchrow("SELECT source, reason, raw FROM dead_letters")
        assert await conn.fetchval("SELECT count(*) FROM twitch_events") == 5
    assert letter["source"] == "store" and "database rejected the row" in letter["reason"]
    assert '"odd"' in letter["raw"]
