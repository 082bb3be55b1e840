"""Multistream end to end: `streamerhub run` as a subprocess, its CLI and API, real FFmpeg pushing
to real RTMP listeners; kill -9 takes the children down, a restart restores running jobs and
fires scheduled ones, and the stream key shows up in no log line, answer or stored run."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from media import MediaSet, is_running, media_set
from nginx_rtmp import NginxRtmp, needs_nginx

pytestmark = [pytest.mark.e2e, pytest.mark.ffmpeg]

KEYS = {
    "a": "live_700001_E2eSecretAaaa",
    "b": "live_700002_E2eSecretBbbb",
    "c": "e2e-plain-secret-cccc-0003",
}


class Session:
    """HTTP + CLI access to one running daemon; keeps every answer to search it for keys."""

    def __init__(self, daemon: Any, http: aiohttp.ClientSession) -> None:
        self.daemon, self.http = daemon, http
        self.token = (daemon.data_dir / "api-token").read_text().strip()
        self.answers: list[str] = []

    async def call(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(
            method, f"{self.daemon.url}/api/v1{path}", headers=headers, **kw
        ) as resp:
            text = await resp.text()
            self.answers.append(text)
            assert resp.status == status, text
            return json.loads(text) if text else None

    async def cli(self, *args: str, stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamerhub",
            *args,
            "--config",
            str(self.daemon.config),
            "--data-dir",
            str(self.daemon.data_dir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.daemon.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
        assert proc.returncode == 0, err.decode()
        self.answers.append(out.decode())
        return out.decode()

    async def wait_target(
        self, job_id: int, target_id: int, *states: str, timeout: float = 20
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.call("GET", f"/jobs/{job_id}")
            target = next(t for t in job["targets"] if t["target_id"] == target_id)
            if target["state"] in states:
                return target
            assert time.monotonic() < deadline, target
            await asyncio.sleep(0.2)


async def start_daemon(daemon_factory: Any, db_url: str, data_dir: Path | None = None) -> Any:
    daemon = daemon_factory(
        '[general]\ntimezone = "America/New_York"\n',
        env={"STREAMERHUB_DATABASE_URL": db_url},
        data_dir=data_dir,
    )
    await asyncio.to_thread(daemon.start)
    return daemon


@needs_nginx
async def test_daemon_streams_dies_cleanly_and_restores(
    db_url: str, daemon_factory: Any, media_set: MediaSet, tmp_path: Path
) -> None:
    async with (
        NginxRtmp(keys={KEYS["a"]}, record=False) as a,
        NginxRtmp(keys={KEYS["b"]}, record=False) as b,
        NginxRtmp(keys={KEYS["c"]}, record=False) as c,
        aiohttp.ClientSession() as http,
    ):
        daemon = await start_daemon(daemon_factory, db_url)
        token_file = daemon.data_dir / "api-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        s = Session(daemon, http)
        assert (await s.cli("api-token")).strip() == s.token

        # Targets and a video through the CLI (the key comes on stdin, never in argv).
        ids = {}
        for name, server in (("a", a), ("b", b), ("c", c)):
            out = await s.cli(
                "targets", "add", name, server.url, "--key-stdin", "--json", stdin=KEYS[name] + "\n"
            )
            ids[name] = json.loads(out)["id"]
        listed = json.loads(await s.cli("targets", "list", "--json"))
        assert [t["stream_key"] for t in listed] == ["••••" + KEYS[n][-4:] for n in "abc"]
        video = json.loads(await s.cli("videos", "upload", str(media_set.ready), "--json"))
        deadline = time.monotonic() + 30
        while (await s.call("GET", f"/videos/{video['id']}"))["status"] != "ready":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)

        job = await s.call(
            "POST",
            "/jobs",
            201,
            json={
                "name": "e2e",
                "videos": [video["id"]],
                "targets": [ids["a"], ids["b"]],
                "loop": "forever",
            },
        )
        assert "e2e" in await s.cli("jobs", "start", str(job["id"]))
        live = [await s.wait_target(job["id"], ids[n], "live") for n in "ab"]
        pids = [t["pid"] for t in live]
        assert all(pids) and all(is_running(p) for p in pids)
        await a.wait_receiving(KEYS["a"], 1.0)
        await b.wait_receiving(KEYS["b"], 1.0)
        # The running children's output can be read while they push, keys masked.
        tails = (await s.call("GET", f"/jobs/{job['id']}/log"))["targets"]
        assert [(t["target_id"], t["running"], t["run"]) for t in tails] == [
            (ids["a"], True, 1),
            (ids["b"], True, 1),
        ]
        assert all(any("/live/••••" in line for line in t["lines"]) for t in tails), tails
        await s.call("GET", "/jobs/99999/log", 404)

        # A scheduled job the daemon will only see fire after its restart.
        start_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=6)
        scheduled = await s.call(
            "POST",
            "/jobs",
            201,
            json={
                "name": "later",
                "videos": [video["id"]],
                "targets": [ids["c"]],
                "loop": "forever",
                "schedule": {"start_at": start_at.isoformat(), "duration_s": 120},
            },
        )
        assert scheduled["next_start"].endswith(("-05:00", "-04:00"))  # New York time

        # kill -9: no FFmpeg child keeps pushing for more than 5 s.
        killed_at = time.monotonic()
        daemon.signal(signal.SIGKILL)
        await asyncio.to_thread(daemon.wait, 10)
        while any(is_running(p) for p in pids):
            assert time.monotonic() - killed_at <= 5, "FFmpeg outlived the daemon"
            await asyncio.sleep(0.05)

        # Restart: the running job comes back, the scheduled one fires.
        second = await start_daemon(daemon_factory, db_url, daemon.data_dir)
        s2 = Session(second, http)
        back = [await s2.wait_target(job["id"], ids[n], "live") for n in "ab"]
        assert {t["pid"] for t in back}.isdisjoint(pids)
        fired = await s2.wait_target(scheduled["id"], ids["c"], "live", timeout=25)
        assert fired["state"] == "live" and KEYS["c"] in c.published
        assert "live" in await s2.cli("jobs", "list")

        # A listener refusing the key is classified; the key is in no answer, log or run.
        await s2.call("PATCH", f"/targets/{ids['b']}", json={"url": c.url})
        refused = await s2.wait_target(job["id"], ids["b"], "backoff")
        assert refused["failure_class"] == "key_rejected"
        detail = await s2.call("GET", f"/jobs/{job['id']}")
        assert any(r["failure_class"] == "key_rejected" for r in detail["runs"])
        await s2.call("POST", f"/jobs/{job['id']}/stop")
        await s2.call("POST", f"/jobs/{scheduled['id']}/stop")
        logs = daemon.log() + second.log()
        assert "ffmpeg_started" in logs and "key_rejected" in logs
        masked = [f"/live/{m}" for m in ("••••", "\\u2022\\u2022\\u2022\\u2022")]
        assert any(m in logs for m in masked)  # FFmpeg's errors name the URL, key masked
        stored = await stored_runs(db_url)
        for key in KEYS.values():
            for where, text in (
                ("log", logs),
                ("answers", "".join(s.answers + s2.answers)),
                ("stored runs", stored),
            ):
                assert key not in text, f"stream key found in {where}"
        await asyncio.to_thread(second.stop)


async def stored_runs(db_url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("SELECT * FROM stream_runs")
    finally:
        await conn.close()
    assert rows
    return json.dumps([dict(r) for r in rows], default=str)


def test_api_token_command_creates_a_private_token(tmp_path: Path) -> None:
    import subprocess

    data = tmp_path / "data"
    env = {**os.environ, "STREAMERHUB_LOG_FORMAT": "json"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamerhub",
            "api-token",
            "--data-dir",
            str(data),
            "--config",
            str(tmp_path / "none.toml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "config file" in out.stderr  # a wrong --config is named
    (tmp_path / "c.toml").write_text("")
    first = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamerhub",
            "api-token",
            "--data-dir",
            str(data),
            "--config",
            str(tmp_path / "c.toml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert len(first.strip()) >= 40
    assert stat.S_IMODE((data / "api-token").stat().st_mode) == 0o600
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamerhub",
            "jobs",
            "list",
            "--data-dir",
            str(data),
            "--config",
            str(tmp_path / "c.toml"),
            "--url",
            "http://127.0.0.1:9",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 1 and "cannot reach the daemon" in listed.stderr
