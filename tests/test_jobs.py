"""Stream jobs with real FFmpeg pushing to real RTMP listeners on 127.0.0.1: isolation between
targets, recovery, per-target start/stop, loops and playlists, schedules, restore, Twitch info."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import subprocess
import time
import zoneinfo
from pathlib import Path
from types import SimpleNamespace
from typing import Any, AsyncIterator

import pytest
from conftest import make_settings
from media import MediaSet, ffmpeg_exe, media_set, no_leftover_ffmpeg
from nginx_rtmp import NginxRtmp, needs_nginx
from rtmp_server import RtmpServer  # the frozen ingest: what no real server does

from streamerhub.commands.client import job_text
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.errors import Conflict, InvalidInput
from streamerhub.ffmpeg.jobs import parse_job
from streamerhub.ffmpeg.policy import DEFAULT_TIMING, RestartPolicy, RunnerTiming
from streamerhub.ffmpeg.probe import parse_input_info
from streamerhub.ffmpeg.schedule import Schedule, parse_schedule
from streamerhub.ffmpeg.service import Multistream

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc
KEY_A = "live_111111_SecretKeyAaaa"
KEY_B = "live_222222_SecretKeyBbbb"
FAST = RestartPolicy(backoff_initial=0.5, backoff_max=2.0)


# ----------------------------------------------------------------------------- schedule maths


def test_a_repeating_schedule_uses_the_local_time_of_day_across_dst() -> None:
    # Mondays and Thursdays at 20:00 Paris time, 2 hours long; DST starts on 2025-03-30.
    start = dt.datetime(2025, 3, 24, 20, 0, tzinfo=PARIS)
    sched = Schedule(start_at=start, duration_s=7200, days=(1, 4))
    during = dt.datetime(2025, 3, 31, 19, 30, tzinfo=UTC)  # 21:30 in Paris (UTC+2 now)
    assert sched.current(during, PARIS) == (
        dt.datetime(2025, 3, 31, 20, 0, tzinfo=PARIS),
        dt.datetime(2025, 3, 31, 22, 0, tzinfo=PARIS),
    )
    after = dt.datetime(2025, 3, 31, 20, 30, tzinfo=UTC)  # 22:30 Paris: over
    assert sched.current(after, PARIS) is None
    assert sched.next_start(after, PARIS) == dt.datetime(2025, 4, 3, 20, 0, tzinfo=PARIS)
    upcoming = sched.next_start(after, PARIS)
    assert upcoming is not None and upcoming.utcoffset() == dt.timedelta(hours=2)
    before_first = dt.datetime(2025, 3, 20, 20, 30, tzinfo=PARIS)  # a Thursday before start_at
    assert sched.current(before_first, PARIS) is None


def test_durations_are_real_hours_on_dst_days() -> None:
    # A 3 h window ran 4 h in October and 2 h in March (durations added on the wall clock).
    for day, hour in ((dt.date(2026, 10, 25), 1), (dt.date(2026, 3, 29), 1)):
        start = dt.datetime.combine(day, dt.time(hour), tzinfo=PARIS)
        sched = Schedule(start_at=start, duration_s=3 * 3600, days=(7,))
        occurrence = sched.current(start + dt.timedelta(minutes=1), PARIS)
        assert occurrence is not None and occurrence[1] is not None
        assert occurrence[1].astimezone(UTC) - occurrence[0].astimezone(UTC) == dt.timedelta(
            hours=3
        )
        stop = Schedule(start_at=start, stop_at=start.replace(hour=hour + 3), days=(7,))
        assert stop.length == dt.timedelta(hours=2 if day.month == 3 else 4)  # real time


def test_a_nonexistent_local_start_still_fires_for_its_full_length() -> None:
    # Sundays 02:30 Paris for 1 h; on 2026-03-29 clocks jump 02:00 → 03:00, so 02:30 does not
    # exist: the window used to be empty and never fired. Documented: it starts at 03:30 CEST.
    sched = Schedule(
        start_at=dt.datetime(2026, 3, 22, 2, 30, tzinfo=PARIS), duration_s=3600, days=(7,)
    )
    inside = dt.datetime(2026, 3, 29, 1, 45, tzinfo=UTC)  # 03:45 CEST
    occurrence = sched.current(inside, PARIS)
    assert occurrence == (
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        dt.datetime(2026, 3, 29, 2, 30, tzinfo=UTC),
    )
    # A time that exists twice (2026-10-25 02:30) starts at the first one, in summer time.
    autumn = sched.next_start(dt.datetime(2026, 10, 24, tzinfo=UTC), PARIS)
    # (compared in UTC: Python never calls an ambiguous local time equal to another zone's)
    assert autumn is not None and autumn.astimezone(UTC) == dt.datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )


def test_a_one_off_schedule_with_stop_at() -> None:
    start = dt.datetime(2025, 6, 1, 20, 0, tzinfo=PARIS)
    sched = Schedule(start_at=start, stop_at=start + dt.timedelta(hours=1))
    assert sched.current(start - dt.timedelta(seconds=1), PARIS) is None
    assert sched.current(start + dt.timedelta(minutes=5), PARIS) == (
        start,
        start + dt.timedelta(hours=1),
    )
    assert sched.current(start + dt.timedelta(hours=2), PARIS) is None
    assert sched.deadline_for_manual_start(start - dt.timedelta(hours=1)) == sched.stop_at


def test_schedule_input_is_read_in_the_streamers_time_zone() -> None:
    now = dt.datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    sched = parse_schedule(
        {"start_at": "2025-06-01T20:00", "duration_s": 3600, "days": ["Mon", "fri", 7]}, PARIS, now
    )
    assert sched.start_at == dt.datetime(2025, 6, 1, 20, 0, tzinfo=PARIS)
    assert sched.days == (1, 5, 7)
    assert sched.to_json(PARIS) == {
        "start_at": "2025-06-01T20:00:00+02:00",
        "stop_at": None,
        "duration_s": 3600,
        "days": ["mon", "fri", "sun"],
    }


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({"start_at": "tomorrow"}, "schedule.start_at: 'tomorrow' is not a date and time"),
        ({"start_at": "2025-06-01T20:00", "stop_at": "2025-06-01T19:00"}, "must be after start_at"),
        (
            {"start_at": "2025-06-01T20:00", "stop_at": "2025-06-01T21:00", "duration_s": 60},
            "give stop_at or duration_s, not both",
        ),
        ({"days": ["mon"]}, "schedule.days: needs start_at"),
        ({"start_at": "2025-06-01T20:00", "days": ["someday"]}, "'someday' is not a weekday"),
        ({"start_at": "2025-05-01T20:00"}, "schedule.start_at: is in the past"),
        ({"duration_s": -5}, "schedule.duration_s: a whole number of seconds above 0"),
        ({"every": "day"}, "schedule: unknown field 'every'"),
    ],
)
def test_bad_schedules_are_explained(schedule: dict[str, Any], message: str) -> None:
    now = dt.datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(InvalidInput, match=message):
        parse_schedule(schedule, PARIS, now)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"videos": []}, "videos: a non-empty list of ids"),
        ({"targets": ["a"]}, "targets: ids are whole numbers"),
        ({"loop": 0}, 'loop: "forever" or the number of plays'),
        ({"tags": ["two words"]}, "tags: 'two words' is not a Twitch tag"),
        ({"tags": [f"t{i}" for i in range(11)]}, "tags: a list of at most 10 tags"),
        ({"title": "x" * 141}, "title: text of at most 140 characters"),
        ({"name": ""}, "name: give the job a name"),
    ],
)
def test_bad_jobs_are_explained(changes: dict[str, Any], message: str) -> None:
    body = {"name": "Night loop", "videos": [1], "targets": [1], **changes}
    with pytest.raises(InvalidInput, match=message):
        parse_job(body, PARIS, dt.datetime.now(UTC))


# ----------------------------------------------------------------------------- live fixtures


@pytest.fixture
def updates() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(os.urandom(32))


def new_multistream(
    tmp_path: Path,
    updates: list[tuple[str, dict[str, Any]]],
    config: str = "",
    timing: RunnerTiming = DEFAULT_TIMING,
) -> Multistream:
    async def set_channel_info(channel_id: str, wanted: dict[str, Any]) -> str:
        updates.append((channel_id, wanted))
        if wanted.get("category") == "Nonexistent":
            raise RuntimeError("Twitch said 400: category not found")
        return "title, category and tags updated"

    # Import by path reads only from import_dirs: the session's temporary folder holds both
    # the shared media set and each test's own files.
    config = config or '[general]\ntimezone = "Europe/Paris"\n'
    if "[library]" not in config:
        config += f'[library]\nimport_dirs = ["{tmp_path.parent}"]\n'
    settings = make_settings(tmp_path, config)
    return Multistream(settings, policy=FAST, timing=timing, channel_updater=set_channel_info)


@pytest.fixture
async def multistream(
    db: Database, tmp_path: Path, keyring: Keyring, updates: list[tuple[str, dict[str, Any]]]
) -> AsyncIterator[Multistream]:
    ms = new_multistream(tmp_path, updates)
    async with ms.running(db, keyring):
        yield ms


async def ready_video(ms: Multistream, path: Path, timeout: float = 30) -> int:
    video = await ms.library.import_path({"path": str(path)})
    deadline = time.monotonic() + timeout
    while (current := await ms.library.get(video.id)).status != "ready":
        assert current.status != "rejected", current.reason
        assert time.monotonic() < deadline, "video never became ready"
        await asyncio.sleep(0.05)
    return video.id


async def add_target(ms: Multistream, name: str, server: Any, key: str, **extra: Any) -> int:
    """A target pushing to `server` (an ingest, anything with a `url`) with this key."""
    return (
        await ms.targets.create({"name": name, "url": server.url, "stream_key": key, **extra})
    ).id


async def target_state(ms: Multistream, job_id: int, target_id: int) -> dict[str, Any]:
    body = await ms.job_json(await ms.jobs.get(job_id))
    return next(t for t in body["targets"] if t["target_id"] == target_id)


async def wait_state(
    ms: Multistream, job_id: int, target_id: int, *states: str, timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (status := await target_state(ms, job_id, target_id))["state"] not in states:
        assert time.monotonic() < deadline, f"target {target_id} stuck: {status}"
        await asyncio.sleep(0.1)
    return status


async def media_rate(ms: Multistream, job_id: int, target_id: int, window: float = 2.0) -> float:
    """Seconds of media pushed per wall-clock second over a window (1.0: real time)."""
    first, started = (await target_state(ms, job_id, target_id))["out_time_s"], time.monotonic()
    await asyncio.sleep(window)
    last = (await target_state(ms, job_id, target_id))["out_time_s"]
    return (last - first) / (time.monotonic() - started)


def decoded_streams(flv: Path) -> tuple[str | None, str | None]:
    """(video codec, audio codec) of a recorded FLV, after decoding its first 2 seconds."""
    done = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-v", "info", "-t", "2", "-i", str(flv), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    info = parse_input_info(done.stderr)
    assert info is not None, done.stderr
    return (info.video.codec if info.video else None, info.audio.codec if info.audio else None)


def recorded_seconds(flv: Path) -> float:
    """Seconds of media in a recorded FLV, by decoding all of it."""
    done = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(flv), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    stamps = re.findall(r"time=(\d+):(\d+):([\d.]+)", done.stderr)
    assert stamps, done.stderr[-2000:]
    hours, minutes, seconds = stamps[-1]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def assert_no_key(*texts: Any) -> None:
    dumped = json.dumps(texts, default=str)
    for key in (KEY_A, KEY_B):
        assert key not in dumped and key[-12:] not in dumped


# ----------------------------------------------------------------------------- live tests

pytestmark = [pytest.mark.usefixtures("no_leftover_ffmpeg")]


@pytest.mark.ffmpeg
@needs_nginx
async def test_two_targets_are_isolated_and_recover(
    multistream: Multistream,
    media_set: MediaSet,
    tmp_path: Path,
    db: Database,
    updates: list[tuple[str, dict[str, Any]]],
) -> None:
    ms = multistream
    await db.pool.execute(
        "INSERT INTO twitch_channels (channel_id, login, display_name) "
        "VALUES ('4242', 'alt', 'Alt')"
    )
    video = await ready_video(ms, media_set.ready)
    async with (
        NginxRtmp(tmp_path / "a", keys={KEY_A}) as a,
        NginxRtmp(tmp_path / "b", keys={KEY_B}) as b,
    ):
        ta = await add_target(ms, "A", a, KEY_A, channel_id="4242")
        tb = await add_target(ms, "B", b, KEY_B)
        job = await ms.create_job(
            {
                "name": "both",
                "videos": [video],
                "targets": [ta, tb],
                "loop": "forever",
                "title": "Rerun night",
                "category": "Just Chatting",
                "tags": ["rerun", "English"],
            }
        )
        await ms.start_job(job.id)
        await wait_state(ms, job.id, ta, "live")
        await wait_state(ms, job.id, tb, "live")
        # Each listener gets a decodable H.264/AAC stream.
        await a.wait_receiving(KEY_A, 2.5)
        await b.wait_receiving(KEY_B, 2.5)
        recorded = [*a.recordings(KEY_A), *b.recordings(KEY_B)]
        assert len(recorded) == 2
        assert all(decoded_streams(path) == ("h264", "aac") for path in recorded)
        # The linked, connected Twitch channel got the job's title, category and tags.
        assert updates == [
            (
                "4242",
                {"title": "Rerun night", "category": "Just Chatting", "tags": ["rerun", "English"]},
            )
        ]
        detail = await ms.job_json(await ms.jobs.get(job.id), detail=True)
        assert detail["channel_updates"][0]["ok"] is True

        # Kill A's ingest: A backs off, B keeps its child and its speed.
        b_live = await target_state(ms, job.id, tb)
        await a.stop()
        failing = await wait_state(ms, job.id, ta, "backoff", timeout=15)
        assert failing["failure_class"] in ("connection_refused", "other", "timeout")
        assert failing["last_error"] and failing["next_retry_at"]
        b_now = await target_state(ms, job.id, tb)
        assert b_now["state"] == "live" and b_now["pid"] == b_live["pid"]
        assert await media_rate(ms, job.id, tb) == pytest.approx(1.0, abs=0.15)
        assert (await ms.job_json(await ms.jobs.get(job.id)))["state"] == "degraded"

        # Bring it back: A is on air again within 15 s.
        back_at = time.monotonic()
        await a.start()
        recovered = await wait_state(ms, job.id, ta, "live", timeout=15)
        assert time.monotonic() - back_at <= 15 and recovered["restarts"] >= 1
        assert (await target_state(ms, job.id, tb))["pid"] == b_live["pid"]

        # Stop and start B alone: A's child is not touched.
        a_pid = recovered["pid"]
        await ms.stop_job_target(job.id, tb)
        stopped = await target_state(ms, job.id, tb)
        assert (stopped["state"], stopped["desired"]) == ("stopped", "stopped")
        await ms.start_job_target(job.id, tb)
        await wait_state(ms, job.id, tb, "live")
        assert (await target_state(ms, job.id, ta))["pid"] == a_pid
        final = await ms.job_json(await ms.stop_job(job.id), detail=True)
        assert final["desired"] == "stopped" and final["ended_reason"] == "stopped by user"

    await asyncio.sleep(0.3)  # the last run records are written in the background
    runs = await ms.jobs.runs(job.id)
    failed = [r for r in runs if r["target_id"] == ta and r["failure_class"]]
    assert failed and failed[-1]["stderr_tail"]
    assert_no_key(runs, final, await db.pool.fetch("SELECT * FROM stream_runs"))
    assert "rtmp://127.0.0.1" in "".join(r["stderr_tail"] for r in runs)  # URLs kept, keys not


@pytest.mark.ffmpeg
async def test_a_frozen_ingest_is_restarted_without_touching_the_other_target(
    db: Database,
    tmp_path: Path,
    keyring: Keyring,
    media_set: MediaSet,
    updates: list[tuple[str, dict[str, Any]]],
) -> None:
    # A frozen ingest keeps its socket open and reads nothing: FFmpeg stays alive, prints
    # progress that does not advance and ignores `q`. With the default 512 KiB send buffer a
    # ~550 kbit/s test file keeps "advancing" for ~16 s while the buffers fill (26 s to
    # detect); a 64 KiB buffer fills in ~4 s, and a 5 s stall limit keeps this test short.
    timing = RunnerTiming(stall_after=5.0, send_buffer=64 * 1024)
    ms = new_multistream(tmp_path, updates, timing=timing)
    async with ms.running(db, keyring):
        await _freeze_one_of_two(ms, media_set)


async def _freeze_one_of_two(ms: Multistream, media_set: MediaSet) -> None:
    video = await ready_video(ms, media_set.ready)
    async with RtmpServer() as a, RtmpServer() as b:
        ta, tb = await add_target(ms, "A", a, KEY_A), await add_target(ms, "B", b, KEY_B)
        job = await ms.create_job(
            {"name": "frozen", "videos": [video], "targets": [ta, tb], "loop": "forever"}
        )
        await ms.start_job(job.id)
        await wait_state(ms, job.id, ta, "live")
        b_pid = (await wait_state(ms, job.id, tb, "live"))["pid"]

        a.freeze()
        frozen_at = time.monotonic()
        left = await wait_state(ms, job.id, ta, "backoff", "starting", timeout=15)
        print(
            f"frozen target left live after {time.monotonic() - frozen_at:.1f} s: "
            f"{left['failure_class']}, {left['last_error']}"
        )
        assert left["failure_class"] == "timeout"  # off air at once, restarted just after
        deadline = time.monotonic() + 10
        while (await target_state(ms, job.id, ta))["restarts"] < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        b_now = await target_state(ms, job.id, tb)
        assert (b_now["state"], b_now["pid"]) == ("live", b_pid)

        a.unfreeze()
        thawed_at = time.monotonic()
        back = await wait_state(ms, job.id, ta, "live", timeout=15)
        print(
            f"live again {time.monotonic() - thawed_at:.1f} s after the thaw, "
            f"restarts={back['restarts']}"
        )
        b_now = await target_state(ms, job.id, tb)
        assert (b_now["state"], b_now["pid"]) == ("live", b_pid)
        await ms.stop_job(job.id)

    await asyncio.sleep(0.3)  # run records are written in the background
    stalled = [r for r in await ms.jobs.runs(job.id) if r["target_id"] == ta and r["failure_class"]]
    assert stalled and stalled[-1]["failure_class"] == "timeout"
    assert "no progress" in stalled[-1]["error"] or "timed out" in stalled[-1]["error"].lower()
    assert_no_key(stalled)


@pytest.mark.ffmpeg
@needs_nginx
async def test_a_rejected_key_is_classified_and_not_hammered(
    multistream: Multistream, media_set: MediaSet
) -> None:
    ms = multistream
    video = await ready_video(ms, media_set.ready)
    async with NginxRtmp(keys={"the-right-key-000"}, record=False) as server:
        target = await add_target(ms, "wrong", server, KEY_A)
        job = await ms.create_job({"name": "bad key", "videos": [video], "targets": [target]})
        await ms.start_job(job.id)
        status = await wait_state(ms, job.id, target, "backoff", timeout=10)
        assert status["failure_class"] == "key_rejected"
        assert status["next_retry_in_s"] >= 40
        await asyncio.sleep(2)
        assert server.rejected == [KEY_A] and not server.published
        assert_no_key(status)
        await ms.stop_job(job.id)


@pytest.mark.ffmpeg
@needs_nginx
async def test_loops_and_playlists_play_through_without_reconnecting(
    multistream: Multistream, media_set: MediaSet
) -> None:
    ms = multistream
    clip_a = await ready_video(ms, media_set.clip_a)
    clip_b = await ready_video(ms, media_set.clip_b)
    async with NginxRtmp() as looped, NginxRtmp() as listed:
        t1 = await add_target(ms, "looped", looped, "loop-key-0001")
        t2 = await add_target(ms, "listed", listed, "list-key-0002")
        loop_job = await ms.create_job(
            {"name": "twice", "videos": [clip_a], "targets": [t1], "loop": 2}
        )
        list_job = await ms.create_job(
            {"name": "a then b", "videos": [clip_a, clip_b], "targets": [t2]}
        )
        await ms.start_job(loop_job.id)
        await ms.start_job(list_job.id)
        for job in (loop_job, list_job):
            deadline = time.monotonic() + 20
            while (await ms.jobs.get(job.id)).running:
                assert time.monotonic() < deadline, "job never finished"
                await asyncio.sleep(0.2)
            done = await ms.job_json(await ms.jobs.get(job.id))
            assert done["ended_reason"] == "playlist finished"
            assert done["targets"][0]["finished"] is True
        for server, key in ((looped, "loop-key-0001"), (listed, "list-key-0002")):
            assert server.published == [key] and server.connections == 1
            [recording] = server.recordings(key)
            assert recorded_seconds(recording) >= 5.5  # 2 × 3 s, one connection
        playlist_dir = ms.data_dir / "jobs" / f"{list_job.id}-{t2}"
        assert (playlist_dir / "playlist.ffconcat").is_file()
        await ms.delete_job(list_job.id)
        assert not playlist_dir.exists()


@pytest.mark.ffmpeg
@needs_nginx
async def test_a_scheduled_job_fires_and_stops_after_its_duration(
    multistream: Multistream, media_set: MediaSet
) -> None:
    ms = multistream
    video = await ready_video(ms, media_set.ready)
    async with NginxRtmp(record=False) as server:
        target = await add_target(ms, "timed", server, "timed-key-0001")
        start = dt.datetime.now(UTC) + dt.timedelta(seconds=1.5)
        job = await ms.create_job(
            {
                "name": "timed",
                "videos": [video],
                "targets": [target],
                "loop": "forever",
                "schedule": {"start_at": start.isoformat(), "duration_s": 3},
            }
        )
        assert (await ms.job_json(job))["next_start"] is not None
        await wait_state(ms, job.id, target, "live", timeout=10)
        fired = await ms.jobs.get(job.id)
        assert fired.last_fired_at is not None and fired.stop_deadline is not None
        deadline = time.monotonic() + 10
        while (await ms.jobs.get(job.id)).running:
            assert time.monotonic() < deadline, "scheduled job never stopped"
            await asyncio.sleep(0.2)
        assert (await ms.jobs.get(job.id)).ended_reason == "stop time reached"
        assert server.published == ["timed-key-0001"]


@pytest.mark.ffmpeg
@needs_nginx
async def test_running_jobs_come_back_after_a_restart(
    db: Database,
    tmp_path: Path,
    keyring: Keyring,
    media_set: MediaSet,
    updates: list[tuple[str, dict[str, Any]]],
) -> None:
    await db.pool.execute(
        "INSERT INTO twitch_channels (channel_id, login, display_name) VALUES ('77', 'me', 'Me')"
    )
    first = new_multistream(tmp_path, updates)
    async with NginxRtmp(record=False) as server:
        async with first.running(db, keyring):
            video = await ready_video(first, media_set.ready)
            target = await add_target(first, "kept", server, "kept-key-0001", channel_id="77")
            other = await add_target(first, "paused", server, "paused-key-0002")
            job = await first.create_job(
                {
                    "name": "kept",
                    "videos": [video],
                    "targets": [target, other],
                    "loop": "forever",
                    "title": "Rerun",
                    "category": "Nonexistent",  # the fake updater refuses it, as Twitch would
                }
            )
            await first.start_job(job.id)
            await first.stop_job_target(job.id, other)
            await wait_state(first, job.id, target, "live")
            # The refusal is on the job itself (CLI, dashboard), not only in the detail view.
            shown = await first.job_json(await first.jobs.get(job.id))
            assert shown["warnings"] == [
                "title/category not set on Twitch channel 77: Twitch said 400: category not found"
            ]
            assert "warning: title/category not set" in job_text(shown)
        assert (await first.jobs.get(job.id)).running  # a daemon stop keeps the desired state
        second = new_multistream(tmp_path, updates)
        async with second.running(db, keyring):
            await wait_state(second, job.id, target, "live")
            paused = await target_state(second, job.id, other)
            assert (paused["state"], paused["desired"]) == ("stopped", "stopped")
            # Resuming re-applies the title: the channel may have been retitled meanwhile.
            deadline = time.monotonic() + 10
            while len(updates) < 2:
                assert time.monotonic() < deadline, updates
                await asyncio.sleep(0.05)
    assert [channel for channel, _ in updates] == ["77", "77"]


async def test_job_rules(multistream: Multistream, media_set: MediaSet) -> None:
    ms = multistream
    server = SimpleNamespace(url="rtmp://127.0.0.1:1/live")  # nothing is pushed to it
    target = await add_target(ms, "t", server, "rules-key-0001")
    await ms.library.stop()  # the video stays unprobed: a job may wait for it
    video = (await ms.library.import_path({"path": str(media_set.text)})).id
    job = await ms.create_job({"name": "rules", "videos": [video], "targets": [target]})
    with pytest.raises(InvalidInput, match=r"video \d+ \(notes.mp4\) is not ready"):
        await ms.start_job(job.id)
    with pytest.raises(Conflict, match="is not running: start the job first"):
        await ms.start_job_target(job.id, target)
    with pytest.raises(Conflict, match="is used by job 'rules'"):
        await ms.targets.delete(target)
        with pytest.raises(Conflict, match="is used by job"):
            await ms.library.delete(video)
        with pytest.raises(InvalidInput, match="videos: one of the ids is not a video"):
            await ms.create_job({"name": "x", "videos": [999], "targets": [target]})
        await ms.update_target(target, {"enabled": False})
        edited = await ms.update_job(job.id, {"title": "New title", "tags": ["a1"]})
        assert (edited.title, edited.tags) == ("New title", ("a1",))
        await ms.delete_job(job.id)
        await ms.targets.delete(target)


async def test_a_job_on_a_rejected_video_is_refused_when_created(
    multistream: Multistream, media_set: MediaSet
) -> None:
    # It used to be accepted (201) and to fail only when started, or when its schedule fired.
    ms = multistream
    video = (await ms.library.import_path({"path": str(media_set.text)})).id
    deadline = time.monotonic() + 30
    while (await ms.library.get(video)).status != "rejected":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    target = (
        await ms.targets.create(
            {"name": "t", "url": "rtmp://127.0.0.1:9/live", "stream_key": "rej-key-0001"}
        )
    ).id
    with pytest.raises(InvalidInput, match=r"video \d+ \(notes.mp4\) was rejected"):
        await ms.create_job({"name": "x", "videos": [video], "targets": [target]})
    assert await ms.jobs.list() == []


async def test_the_scheduler_fires_once_per_occurrence_and_ends_runs_at_the_window_end(
    multistream: Multistream, media_set: MediaSet
) -> None:
    # Driven with explicit clocks through tick(): no waiting, no FFmpeg (the video is not
    # ready, so a scheduled start fails and says why).
    ms = multistream
    await ms.library.stop()  # the video stays unprobed, so the job can be created
    video = (await ms.library.import_path({"path": str(media_set.text)})).id
    target = (
        await ms.targets.create(
            {"name": "t", "url": "rtmp://127.0.0.1:9/live", "stream_key": "tick-key-0001"}
        )
    ).id
    start = (dt.datetime.now(UTC) + dt.timedelta(hours=1)).replace(microsecond=0)
    job = await ms.create_job(
        {
            "name": "weekly",
            "videos": [video],
            "targets": [target],
            "schedule": {
                "start_at": start.isoformat(),
                "duration_s": 60,
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            },
        }
    )
    assert await ms.tick(start - dt.timedelta(seconds=10)) == pytest.approx(10, abs=0.5)
    # Started by hand inside the window: the scheduler only adds the window's end.
    await ms.jobs.set_running(job.id, None)
    await ms.tick(start + dt.timedelta(seconds=5))
    running = await ms.jobs.get(job.id)
    assert running.stop_deadline == start + dt.timedelta(seconds=60)
    assert running.last_fired_at == start
    await ms.tick(start + dt.timedelta(seconds=61))
    assert (await ms.jobs.get(job.id)).ended_reason == "stop time reached"
    # The next day's occurrence fires; the video is not ready, so it is recorded as failed.
    await ms.tick(start + dt.timedelta(days=1, seconds=1))
    failed = await ms.jobs.get(job.id)
    assert not failed.running and failed.last_fired_at == start + dt.timedelta(days=1)
    assert failed.ended_reason and failed.ended_reason.startswith("scheduled start failed: video")
    await ms.tick(start + dt.timedelta(days=1, seconds=2))  # fired once only
    assert (await ms.jobs.get(job.id)).ended_reason == failed.ended_reason
