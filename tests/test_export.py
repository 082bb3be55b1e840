"""Exports stream correct CSV and JSON with UTC and local timestamps, from code and the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import asyncpg
import pytest
from analytics_data import add_event, z
from test_analytics_queries import build_dst_night

from streamerhub.analytics.export import (
    EVENT_COLUMNS,
    SERIES_COLUMNS,
    SESSION_EXPORT_COLUMNS,
    export_events,
    export_series,
    export_sessions,
)
from streamerhub.analytics.periods import Calendar, calendar_period
from streamerhub.commands.main import main
from streamerhub.db import Database

PARIS = Calendar("Europe/Paris")


async def collect(chunks) -> tuple[bytes, int]:
    parts = [chunk async for chunk in chunks]
    return b"".join(parts), len(parts)


def read_csv(data: bytes) -> list[dict[str, str]]:
    text = data.decode()
    assert text.splitlines()[0] in (
        ",".join(EVENT_COLUMNS),
        ",".join(SESSION_EXPORT_COLUMNS),
        ",".join(SERIES_COLUMNS),
    )
    return list(csv.DictReader(io.StringIO(text)))


async def test_events_csv_has_both_timestamps_across_the_dst_change(db: Database) -> None:
    async with db.pool.acquire() as conn:
        await add_event(conn, "follow", "c1", z("2026-03-29T00:30Z"), user="early_bird")
        await add_event(conn, "cheer", "c1", z("2026-03-29T01:30:00.250Z"), user="rich", bits=500)
        await add_event(conn, "raid_in", "c1", z("2026-03-29T02:00Z"), user="friend", viewers=77)
        await add_event(conn, "gift", "c1", z("2026-03-29T02:10Z"), user="santa", total=10)
        await add_event(conn, "follow", "c2", z("2026-03-29T01:00Z"))  # other channel
        await add_event(conn, "follow", "c1", z("2026-03-30T01:00Z"))  # out of range
    data, _ = await collect(
        export_events(db.pool, PARIS, z("2026-03-28T23:00Z"), z("2026-03-29T22:00Z"), "csv", "c1")
    )
    rows = read_csv(data)
    assert [r["type"] for r in rows] == [
        "channel.follow",
        "channel.cheer",
        "channel.raid",
        "channel.subscription.gift",
    ]
    follow, cheer, raid, gift = rows
    assert (follow["occurred_at_utc"], follow["occurred_at_local"]) == (
        "2026-03-29T00:30:00Z",
        "2026-03-29T01:30:00+01:00",
    )
    assert (cheer["occurred_at_utc"], cheer["occurred_at_local"]) == (
        "2026-03-29T01:30:00.250000Z",
        "2026-03-29T03:30:00.250000+02:00",
    )  # after the jump
    assert (follow["user_login"], cheer["bits"], cheer["user_login"]) == (
        "early_bird",
        "500",
        "rich",
    )
    assert (raid["user_login"], raid["raid_viewers"], gift["gift_total"]) == ("friend", "77", "10")
    assert json.loads(cheer["event"])["bits"] == 500 and follow["backfilled"] == "false"
    everyone, _ = await collect(
        export_events(db.pool, PARIS, z("2026-03-28T23:00Z"), z("2026-03-29T22:00Z"), "csv")
    )
    assert len(read_csv(everyone)) == 5


async def test_events_filtered_as_the_events_page_asks_newest_first(db: Database) -> None:
    async with db.pool.acquire() as conn:
        await add_event(conn, "follow", "c1", z("2026-03-29T00:30Z"), user="early_bird")
        await add_event(conn, "cheer", "c1", z("2026-03-29T01:30Z"), user="rich", bits=500)
        await add_event(conn, "cheer", "c1", z("2026-03-29T02:30Z"), user="rich", bits=100)
        await add_event(conn, "cheer", "c2", z("2026-03-29T02:40Z"), user="rich", bits=1)
        await add_event(conn, "follow", "c1", z("2026-03-29T03:00Z"), user="late")
    data, _ = await collect(
        export_events(
            db.pool,
            PARIS,
            None,
            None,
            "csv",
            "c1",
            types=["channel.cheer"],
            user="rich",
            newest_first=True,
        )
    )
    assert [r["bits"] for r in read_csv(data)] == ["100", "500"]
    data, _ = await collect(
        export_events(
            db.pool,
            PARIS,
            z("2026-03-29T01:00Z"),
            None,
            "json",
            "c1",
            types=["channel.follow", "channel.cheer"],
        )
    )
    assert [r["user_login"] for r in json.loads(data)] == ["rich", "rich", "late"]


async def test_events_json_is_one_array_streamed_in_chunks(db: Database) -> None:
    async with db.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO twitch_events (message_id, subscription_type, subscription_version, channel_id, "
            "occurred_at, payload) SELECT 'bulk' || g, 'channel.follow', '2', 'c1', "
            "timestamptz '2026-01-01' + g * interval '1 minute', "
            "jsonb_build_object('event', jsonb_build_object('user_login', 'u' || g)) "
            "FROM generate_series(1, 2300) g"
        )
    data, chunks = await collect(
        export_events(db.pool, PARIS, z("2025-12-31T00:00Z"), z("2026-02-01T00:00Z"), "json", "c1")
    )
    rows = json.loads(data)
    assert len(rows) == 2300 and chunks >= 2300 // 500 + 2  # never all at once
    assert list(rows[0]) == list(EVENT_COLUMNS)
    assert (
        rows[0]["occurred_at_local"] == "2026-01-01T01:01:00+01:00"
        and rows[0]["user_login"] == "u1"
    )
    assert rows[0]["event"] == {"user_login": "u1"}
    empty, _ = await collect(
        export_events(db.pool, PARIS, z("2020-01-01T00:00Z"), z("2020-01-02T00:00Z"), "json")
    )
    assert json.loads(empty) == []


async def test_sessions_and_series_exports(db: Database) -> None:
    async with db.pool.acquire() as conn:
        await build_dst_night(conn)
        data, _ = await collect(
            export_sessions(conn, PARIS, z("2026-03-01T00:00Z"), z("2026-04-01T00:00Z"), "csv")
        )
        [night] = read_csv(data)
        assert (night["started_at_local"], night["ended_at_local"]) == (
            "2026-03-28T22:30:00+01:00",
            "2026-03-29T03:30:00+02:00",
        )
        assert (night["started_at_utc"], night["duration_s"], night["title"]) == (
            "2026-03-28T21:30:00Z",
            "14400",
            "Night run",
        )
        assert (night["follows"], night["bits"], night["sampling_gaps"]) == ("6", "350", "1")
        as_json, _ = await collect(
            export_sessions(
                conn, PARIS, z("2026-03-01T00:00Z"), z("2026-04-01T00:00Z"), "json", "c1"
            )
        )
        assert json.loads(as_json)[0]["watch_hours"] == round(2_301_000 / 3600, 2)
        period = calendar_period(PARIS, "day", date(2026, 3, 29))
        series, _ = await collect(
            export_series(conn, "c1", period, "csv", now=z("2026-04-01T00:00Z"))
        )
    rows = read_csv(series)
    assert len(rows) == 23
    assert [r["start_local"] for r in rows[1:3]] == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
    ]
    assert [r["start_utc"] for r in rows[1:3]] == ["2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z"]
    assert [r["gap"] for r in rows[:3]] == ["false", "true", "false"]
    assert sum(int(r["follows"]) for r in rows) == 5


def test_cli_export_writes_csv_and_json_to_stdout(
    db_url: str, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    async def seed() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(
                "INSERT INTO twitch_channels (channel_id, login, display_name) "
                "VALUES ('c1', 'streamer', 'Streamer')"
            )
            await build_dst_night(conn)
        finally:
            await conn.close()

    asyncio.run(seed())
    config = tmp_path / "config.toml"
    config.write_text(
        f'[general]\ntimezone = "Europe/Paris"\n[database]\nurl = "{db_url}"\n'
        'connect_timeout = 5.0\n[log]\nlevel = "warning"\n'
    )
    base = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    assert (
        main(
            [
                "export",
                "events",
                *base,
                "--from",
                "2026-03-29",
                "--to",
                "2026-03-29",
                "--channel",
                "streamer",
            ]
        )
        == 0
    )
    rows = read_csv(capsysbinary.readouterr().out)
    assert len(rows) == 5 + 3 + 5 + 1 + 2 + 2 + 1  # follows, subs, gifted subs, … on the 29th
    assert all(r["occurred_at_local"].startswith("2026-03-29") for r in rows)
    assert (
        main(
            [
                "export",
                "series",
                *base,
                "--from",
                "2026-03-29T00:00",
                "--to",
                "2026-03-29T04:00",
                "--format",
                "json",
            ]
        )
        == 0
    )
    series = json.loads(capsysbinary.readouterr().out)
    assert [p["start_local"][11:16] for p in series] == ["00:00", "01:00", "03:00"]  # 3 real hours
    assert main(["export", "sessions", *base, "--format", "json"]) == 0
    assert json.loads(capsysbinary.readouterr().out)[0]["stream_id"] == "night"
    assert main(["export", "events", *base, "--from", "yesterday"]) == 2  # a usage error
    assert b"--from 'yesterday'" in capsysbinary.readouterr().err


def test_cli_export_into_a_closed_pipe_exits_at_once_without_a_traceback(
    db_url: str, tmp_path: Path
) -> None:
    """`streamerhub export events | head -3`: the reader leaves while the export still holds a
    pooled connection; the command must stop at once, quietly, and leave no process behind."""

    async def seed() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(
                "INSERT INTO twitch_channels (channel_id, login, display_name) "
                "VALUES ('c1', 'streamer', 'Streamer')"
            )
            for i in range(1500):  # well past a pipe's 64 KiB buffer
                await add_event(conn, "follow", "c1", z("2026-03-01T12:00:00Z"), user=f"u{i}")
        finally:
            await conn.close()

    asyncio.run(seed())
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\nconnect_timeout = 5.0\n')
    env = {**os.environ, "STREAMERHUB_LOG_FORMAT": "json"}
    cli = [sys.executable, "-m", "streamerhub", "export", "events", "--config", str(config)]
    cli += ["--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        head = [proc.stdout.readline() for _ in range(3)]
        proc.stdout.close()  # what `head -3` does after its third line
        code = proc.wait(timeout=15)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert head[0].startswith(b"message_id,") and head[2].strip()
    assert code in (0, 141, -13), err  # 141/SIGPIPE is what a shell reports for `… | head`
    assert "Traceback" not in err and "BrokenPipe" not in err, err
