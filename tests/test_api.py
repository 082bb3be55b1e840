"""The /api/v1 JSON API over real HTTP (in-process server): auth, errors, masking, streamed
uploads, jobs with live per-target state, and an OpenAPI document that matches the routes."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from media import MediaSet, make_clip, media_set, no_leftover_ffmpeg
from nginx_rtmp import NginxRtmp, needs_nginx
from test_jobs import keyring, multistream, updates

from streamerhub.analytics.export import ExportRequest, open_export
from streamerhub.analytics.periods import Calendar
from streamerhub.bot.registry import all_channels
from streamerhub.db import Database
from streamerhub.ffmpeg.service import Multistream
from streamerhub.web.api import (
    AUTHORIZERS,
    PREFIX,
    ROUTES,
    bearer_authorizer,
    build_api,
)
from streamerhub.web.chatbot_page import API_ROUTES as CHATBOT_ROUTES
from streamerhub.web.openapi import build_openapi, openapi_json

TOKEN = "test-token-" + "x" * 32
KEY = "live_55555_TopSecretApiKey9z"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = [pytest.mark.usefixtures("no_leftover_ffmpeg")]


class Api:
    """A test client that keeps every response body, to prove the key is in none of them."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.seen: list[str] = []

    async def call(
        self,
        method: str,
        path: str,
        status: int,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        async with self.client.request(
            method,
            PREFIX + path,
            json=json,
            data=data,
            headers=AUTH if headers is None else headers,
        ) as resp:
            text = await resp.text()
            self.seen.append(text)
            assert resp.status == status, text
            assert resp.content_type == "application/json" or status == 204, text
            return await resp.json() if status != 204 else None


@pytest.fixture
async def api(multistream: Multistream, db: Database) -> AsyncIterator[Api]:
    async def exporter(request: ExportRequest) -> Any:
        return await open_export(
            db.pool, Calendar("Europe/Paris"), lambda: all_channels(db), request
        )

    app = web.Application()
    app[AUTHORIZERS] = [bearer_authorizer(TOKEN)]
    app.add_subapp(PREFIX, build_api(multistream, exporter))
    app.router.add_get("/api/openapi.json", openapi_json)
    async with TestClient(TestServer(app)) as client:
        yield Api(client)


async def wait_video(api: Api, video_id: int, *states: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (video := await api.call("GET", f"/videos/{video_id}", 200))["status"] not in states:
        assert time.monotonic() < deadline, video
        await asyncio.sleep(0.1)
    return video


def upload_form(path: Path, filename: str | None = None, **fields: Any) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, str(value))
    form.add_field(
        "file", path.open("rb"), filename=filename or path.name, content_type="video/mp4"
    )
    return form


# ----------------------------------------------------------------------------- auth + errors


async def test_every_route_needs_the_token_and_errors_are_json(api: Api) -> None:
    body = await api.call("GET", "/targets", 401, headers={})
    assert "Authorization: Bearer" in body["error"] and "streamerhub api-token" in body["error"]
    await api.call("GET", "/targets", 401, headers={"Authorization": "Bearer wrong"})
    await api.call("GET", "/nope", 401, headers={})  # nothing is revealed without the token
    assert await api.call("GET", "/targets", 200) == []
    assert "no such API route" in (await api.call("GET", "/nope", 404))["error"]
    assert (await api.call("GET", "/targets/77", 404))["error"] == "no target with id 77"
    bad = await api.call(
        "POST",
        "/targets",
        400,
        data="{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert bad["error"] == "the request body is not valid JSON"


async def test_the_auth_check_is_pluggable(api: Api) -> None:
    async def session_check(request: web.Request) -> Any:
        if request.headers.get("X-Session") == "viewer" and request.method != "GET":
            raise web.HTTPForbidden(text="Viewers cannot change anything.")
        return request.headers.get("X-Session")

    api.client.app[AUTHORIZERS].append(session_check)
    await api.call("GET", "/jobs", 200, headers={"X-Session": "viewer"})
    refused = await api.call("POST", "/jobs", 403, json={}, headers={"X-Session": "viewer"})
    assert refused == {"error": "Viewers cannot change anything."}


# ----------------------------------------------------------------------------- targets


async def test_targets_crud_never_reveals_the_key(api: Api) -> None:
    created = await api.call(
        "POST",
        "/targets",
        201,
        json={"name": "YouTube", "url": "rtmp://a.rtmp.youtube.com/live2", "stream_key": KEY},
    )
    assert created["stream_key"] == "••••" + KEY[-4:]
    target = f"/targets/{created['id']}"
    edited = await api.call("PATCH", target, 200, json={"name": "YouTube main"})
    assert edited["name"] == "YouTube main" and edited["stream_key"] == created["stream_key"]
    assert [t["name"] for t in await api.call("GET", "/targets", 200)] == ["YouTube main"]
    assert (await api.call("GET", target, 200))["url"] == "rtmp://a.rtmp.youtube.com/live2"
    problems = {
        "url: must start with rtmp:// or rtmps:// (got https://)": {
            "name": "x",
            "url": "https://example.com/live",
            "stream_key": "k" * 12,
        },
        "stream_key: must not contain spaces or line breaks (check the copied text)": {
            "name": "x",
            "url": "rtmp://h/app",
            "stream_key": "two words",
        },
        "name: a target named 'YouTube main' already exists": {
            "name": "YouTube main",
            "url": "rtmp://h/app",
            "stream_key": "k" * 12,
        },
    }
    for message, body in problems.items():
        status = 409 if "already exists" in message else 400
        assert (await api.call("POST", "/targets", status, json=body))["error"] == message
    await api.call("DELETE", target, 204)
    await api.call("DELETE", target, 404)
    assert not any(KEY in text or KEY[-10:] in text for text in api.seen)


# ----------------------------------------------------------------------------- videos


@pytest.mark.ffmpeg
async def test_a_multi_megabyte_upload_is_streamed_to_disk(
    api: Api, multistream: Multistream, tmp_path: Path
) -> None:
    big = make_clip(tmp_path / "big.mp4", seconds=5, size="1280x720", video_kbps=12000)
    assert big.stat().st_size > 5_000_000
    tracemalloc.start()
    try:
        video = await api.call(
            "POST", "/videos", 201, data=upload_form(big, "Big Clip.mp4", video_kbps=16000)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < big.stat().st_size / 2  # never held whole in memory (client nor server)
    assert video["label"] == "Big Clip.mp4" and video["size_bytes"] == big.stat().st_size
    stored = multistream.data_dir / (await multistream.library.get(video["id"])).path
    assert stored.read_bytes() == big.read_bytes()
    ready = await wait_video(api, video["id"], "ready", "rejected")
    assert ready["status"] == "ready" and ready["prepared"]["mode"] == "remux"
    assert ready["probe"]["video"]["width"] == 1280 and ready["profile"]["video_kbps"] == 16000


@pytest.mark.ffmpeg
async def test_bad_uploads_are_refused_or_rejected_with_the_reason(
    api: Api, multistream: Multistream, media_set: MediaSet, tmp_path: Path
) -> None:
    empty = await api.call("POST", "/videos", 400, data=upload_form(media_set.empty))
    assert empty["error"] == "file: the uploaded file is empty (0 bytes)"
    multistream.library.max_upload_bytes = 300_000
    cut_off = await api.call("POST", "/videos", 413, data=upload_form(media_set.ready))
    assert "larger than the upload limit of 293.0 KiB" in cut_off["error"]  # while streaming
    huge = tmp_path / "huge.mp4"
    huge.write_bytes(b"\0" * 3_000_000)
    refused = await api.call("POST", "/videos", 413, data=upload_form(huge))
    assert "larger than the upload limit" in refused["error"]  # from Content-Length alone
    missing = aiohttp.FormData(default_to_multipart=True)
    missing.add_field("other", "x")
    assert (
        "multipart field named 'file'"
        in (await api.call("POST", "/videos", 400, data=missing))["error"]
    )
    text = await api.call("POST", "/videos", 201, data=upload_form(media_set.text))
    rejected = await wait_video(api, text["id"], "rejected", "ready")
    assert rejected["status"] == "rejected" and "not a video file" in rejected["reason"]
    sneaky = await api.call(
        "POST", "/videos", 201, data=upload_form(media_set.clip_a, "../../../../tmp/evil.mp4")
    )
    assert sneaky["label"] == "evil.mp4" and not Path("/tmp/evil.mp4").exists()
    assert not list(tmp_path.glob("**/evil.mp4"))
    await wait_video(api, sneaky["id"], "ready")
    imported = await api.call("POST", "/videos", 201, json={"path": str(media_set.clip_b)})
    assert imported["source"] == "import" and imported["label"] == "clip_b.mp4"
    assert (
        "is not absolute"
        in (await api.call("POST", "/videos", 400, json={"path": "x.mp4"}))["error"]
    )
    assert not [p for p in multistream.library.folder.glob(".incoming/*")]


# ----------------------------------------------------------------------------- jobs


@pytest.mark.ffmpeg
@needs_nginx
async def test_jobs_show_live_state_per_target(api: Api, media_set: MediaSet) -> None:
    video = await api.call("POST", "/videos", 201, json={"path": str(media_set.ready)})
    await wait_video(api, video["id"], "ready")
    async with NginxRtmp(record=False) as server:
        ids = [
            (
                await api.call(
                    "POST",
                    "/targets",
                    201,
                    json={"name": f"t{i}", "url": server.url, "stream_key": f"{KEY}{i}"},
                )
            )["id"]
            for i in (1, 2)
        ]
        job = await api.call(
            "POST",
            "/jobs",
            201,
            json={"name": "api job", "videos": [video["id"]], "targets": ids, "loop": "forever"},
        )
        assert job["state"] == "stopped" and job["loop"] == "forever"
        started = await api.call("POST", f"/jobs/{job['id']}/start", 200)
        assert started["desired"] == "running"
        deadline = time.monotonic() + 15
        while (body := await api.call("GET", f"/jobs/{job['id']}", 200))["state"] != "live":
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.2)
        body = await api.call("GET", f"/jobs/{job['id']}", 200)
        first = body["targets"][0]
        for field in (
            "state",
            "uptime_s",
            "bitrate_kbps",
            "fps",
            "speed",
            "restarts",
            "last_error",
            "failure_class",
            "next_retry_at",
        ):
            assert field in first
        assert first["uptime_s"] > 0 and first["bitrate_kbps"] and first["speed"]
        one = await api.call("POST", f"/jobs/{job['id']}/targets/{ids[1]}/stop", 200)
        assert [t["state"] for t in one["targets"]] == ["live", "stopped"]
        assert one["state"] == "live"
        assert (await api.call("PATCH", f"/jobs/{job['id']}", 409, json={"videos": [video["id"]]}))[
            "error"
        ].startswith("videos: stop the job before changing")
        stopped = await api.call("POST", f"/jobs/{job['id']}/stop", 200)
        assert stopped["state"] == "stopped"
        assert len(await api.call("GET", "/jobs", 200)) == 1
        await api.call("DELETE", f"/jobs/{job['id']}", 204)
    assert not any(KEY in text for text in api.seen)


async def test_openapi_describes_every_route(api: Api) -> None:
    async with api.client.get("/api/openapi.json") as resp:  # no token needed
        assert resp.status == 200
        doc = await resp.json()
    assert doc == build_openapi() and doc["openapi"].startswith("3.")
    described = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    routed = {(method, path.replace(":\\d+", "")) for method, path, _ in (*ROUTES, *CHATBOT_ROUTES)}
    assert described == routed
    for method, path in described:
        operation = doc["paths"][path][method.lower()]
        assert operation["summary"] and "401" in operation["responses"]


async def test_export_streams_the_same_rows_as_the_cli(api: Api, db: Database) -> None:
    await db.pool.execute(
        "INSERT INTO twitch_events (message_id, subscription_type, subscription_version, "
        "channel_id, occurred_at, payload) VALUES ('m1', 'channel.cheer', '1', 'c1', "
        "'2026-06-01T20:30:00Z', '{\"event\": {\"bits\": 100}}')"
    )
    query = "/api/v1/export/events?from=2026-06-01&to=2026-06-01&channel=c1"
    async with api.client.get(query, headers=AUTH) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert "streamerhub-events.csv" in resp.headers["Content-Disposition"]
        lines = (await resp.text()).splitlines()
    assert lines[0].startswith("message_id,channel_id,type,version,occurred_at_utc,")
    assert len(lines) == 2 and lines[1].startswith("m1,c1,channel.cheer,1,2026-06-01T20:30:00Z,")
    assert "2026-06-01T22:30:00+02:00" in lines[1]  # the streamer's wall clock (Europe/Paris)
    async with api.client.get(query + "&format=json", headers=AUTH) as resp:
        assert [row["message_id"] for row in await resp.json()] == ["m1"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("events?from=yesterday", "from 'yesterday': expected a day"),
        ("events?format=xml", "unknown export format 'xml'"),
        ("streams", "unknown export 'streams'"),
        ("series?bucket=fortnight", "unknown bucket 'fortnight'"),
    ],
)
async def test_export_refuses_bad_parameters_in_words(api: Api, query: str, message: str) -> None:
    async with api.client.get(f"/api/v1/export/{query}", headers=AUTH) as resp:
        assert resp.status == 400
        assert message in (await resp.json())["error"]
    async with api.client.get("/api/v1/export/events") as resp:
        assert resp.status == 401


@pytest.mark.ffmpeg
async def test_a_job_on_a_rejected_video_is_a_400_naming_it(
    api: Api, media_set: MediaSet, tmp_path: Path
) -> None:
    # It was accepted (201), then failed when started or when its schedule fired.
    video = await api.call("POST", "/videos", 201, json={"path": str(media_set.text)})
    await wait_video(api, video["id"], "rejected")
    target = await api.call(
        "POST",
        "/targets",
        201,
        json={"name": "t", "url": "RTMP://127.0.0.1:9/live", "stream_key": "api-key-00001"},
    )
    assert target["url"] == "rtmp://127.0.0.1:9/live"  # stored the way FFmpeg reads it
    refused = await api.call(
        "POST", "/jobs", 400, json={"name": "j", "videos": [video["id"]], "targets": [target["id"]]}
    )
    assert f"video {video['id']} (notes.mp4) was rejected" in refused["error"]
    assert await api.call("GET", "/jobs", 200) == []


@pytest.mark.ffmpeg
async def test_a_jobs_linked_account_figures_download_as_csv_or_json(
    api: Api, media_set: MediaSet
) -> None:
    video = await api.call("POST", "/videos", 201, json={"path": str(media_set.ready)})
    await wait_video(api, video["id"], "ready")
    target = await api.call(
        "POST",
        "/targets",
        201,
        json={"name": "t", "url": "rtmp://127.0.0.1:9/app", "stream_key": KEY},
    )
    job = await api.call(
        "POST", "/jobs", 201, json={"name": "j", "videos": [video["id"]], "targets": [target["id"]]}
    )
    path = f"/api/v1/jobs/{job['id']}/accounts"
    async with api.client.get(path, headers=AUTH) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert f"streamerhub-job-{job['id']}-accounts.csv" in resp.headers["Content-Disposition"]
        assert (await resp.text()).startswith("job_id,target_id,target_name,user_id,login,")
    async with api.client.get(path + "?format=json", headers=AUTH) as resp:
        assert resp.status == 200 and await resp.json() == []  # no linked account yet
    async with api.client.get(path + "?format=xml", headers=AUTH) as resp:
        assert resp.status == 400
        assert "format: 'xml' is not one of csv, json" in (await resp.json())["error"]
    async with api.client.get(f"/api/v1/jobs/{job['id'] + 100}/accounts", headers=AUTH) as resp:
        assert resp.status == 404
