"""Multistream jobs with several daemons on one database: exactly one runs them (a lease with
fencing). The lease alone on the database; then two daemons as processes, real FFmpeg pushing to
a real nginx-rtmp: the holder cut off from the database stops pushing within the stated time and
the other takes the job over; the new holder `kill -9`ed, the first takes it back."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from db_link import DatabaseLink
from media import MediaSet, is_running, media_set
from nginx_rtmp import NginxRtmp, needs_nginx
from test_multistream_e2e import Session

from streamerhub.ffmpeg.lease import Lease

KEY = "live_700009_LeaseSecretKkkk"
LEASE = 6.0  # seconds: the holder is fenced after 3 s without a renewal, the others wait 6 s
FFMPEG_STOP = 6.0  # q → 3 s → SIGTERM → 3 s → SIGKILL (ffmpeg/policy.py)


async def test_one_holder_renewal_lapse_takeover_and_the_fence(db) -> None:
    first = Lease(db, "first", 1.0)
    second = Lease(db, "second", 30.0)
    assert await first.renew() and first.held() and first.generation == 1
    assert not await second.renew() and not second.held()
    assert await second.current_holder() == "first"
    assert await first.renew()  # renewal keeps it
    await asyncio.sleep(0.6)
    assert not first.held()  # fenced by its own clock at half the lease, before it lapses
    assert not await second.renew()  # ...which it has not yet for the others
    await asyncio.sleep(0.5)
    assert await second.renew() and second.generation == 2  # lapsed: taken, a new generation
    assert not await first.renew() and not first.held()
    await second.release()  # a clean stop hands it on at once
    assert await first.renew() and first.generation == 3


def _daemon(daemon_factory: Any, db_url: str, data_dir: Path | None = None) -> Any:
    env = {
        "STREAMERHUB_DATABASE_URL": db_url,
        "STREAMERHUB_LEASES_MULTISTREAM_SECONDS": str(LEASE),
    }
    return daemon_factory(env=env, data_dir=data_dir)


async def _pid(s: Session, job_id: int, target_id: int) -> int:
    target = await s.wait_target(job_id, target_id, "live", timeout=30)
    assert target["pid"] and is_running(target["pid"])
    return int(target["pid"])


@pytest.mark.e2e
@pytest.mark.ffmpeg
@needs_nginx
async def test_one_daemon_pushes_the_other_takes_over_when_it_is_cut_off_or_killed(
    db_url: str, daemon_factory: Any, media_set: MediaSet, pg_cluster: Any
) -> None:
    socket_file = next(pg_cluster.socket_dir.glob(".s.PGSQL.*"))
    link = DatabaseLink(str(socket_file))
    await link.start()
    database = db_url.split("/")[3].split("?")[0]
    proxied = f"postgresql://streamerhub@127.0.0.1:{link.port}/{database}?sslmode=disable"
    try:
        async with NginxRtmp(keys={KEY}, record=False) as rtmp, aiohttp.ClientSession() as http:
            first = _daemon(daemon_factory, proxied)
            await asyncio.to_thread(first.start)
            s1 = Session(first, http)
            target = await s1.call(
                "POST", "/targets", 201, json={"name": "t", "url": rtmp.url, "stream_key": KEY}
            )
            video = json.loads(await s1.cli("videos", "upload", str(media_set.ready), "--json"))
            deadline = time.monotonic() + 30
            while (await s1.call("GET", f"/videos/{video['id']}"))["status"] != "ready":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            body = {
                "name": "j",
                "videos": [video["id"]],
                "targets": [target["id"]],
                "loop": "forever",
            }
            job = await s1.call("POST", "/jobs", 201, json=body)
            await s1.call("POST", f"/jobs/{job['id']}/start")
            first_pid = await _pid(s1, job["id"], target["id"])
            await rtmp.wait_receiving(KEY, 1.0)

            second = _daemon(daemon_factory, db_url, first.data_dir.parent / "data-second")
            second.data_dir.mkdir(parents=True)
            shutil.copy(first.data_dir / "master.key", second.data_dir / "master.key")
            # The library on storage both daemons see (as a shared mount would be).
            (second.data_dir / "videos").symlink_to(first.data_dir / "videos")
            await asyncio.to_thread(second.start)
            s2 = Session(second, http)
            await asyncio.sleep(LEASE)  # several renewals: the job stays where it is
            assert is_running(first_pid)
            refused = await s2.call("POST", f"/jobs/{job['id']}/stop", 409)
            assert "another daemon runs the multistream jobs" in refused["error"]

            link.sever()  # the holder loses the database; RTMP stays reachable
            cut_at = time.monotonic()
            while is_running(first_pid):
                assert time.monotonic() - cut_at < LEASE / 2 + LEASE / 4 + FFMPEG_STOP + 1, (
                    "the fenced daemon still pushes"
                )
                job_there = await s2.call("GET", f"/jobs/{job['id']}")
                assert job_there["targets"][0]["state"] != "live", "two daemons push at once"
                await asyncio.sleep(0.2)
            second_pid = await _pid(s2, job["id"], target["id"])
            await rtmp.wait_receiving(KEY, 1.0)
            assert "multistream_fenced" in first.log()

            link.cut = False  # back: the first daemon waits, the job stays with the second
            await asyncio.sleep(LEASE)
            assert is_running(second_pid)
            second.signal(signal.SIGKILL)
            await asyncio.to_thread(second.wait, 10)
            killed_at = time.monotonic()
            back_pid = await _pid(s1, job["id"], target["id"])
            assert back_pid not in (first_pid, second_pid)
            assert time.monotonic() - killed_at < LEASE + LEASE / 4 + 15
            await rtmp.wait_receiving(KEY, 1.0)
            logs = first.log() + second.log()
            # (asyncpg's pool logs its own reconnect attempts with a traceback: not ours)
            leaked = [
                line
                for line in logs.splitlines()
                if KEY in line or ("Traceback" in line and "asyncpg.pool" not in line)
            ]
            assert not leaked, "\n".join(leaked)[:6000]
            await s1.call("POST", f"/jobs/{job['id']}/stop")
    finally:
        link.stop()
