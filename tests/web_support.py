"""Helpers for the dashboard tests: the daemon's app in-process, signing in, seeding events."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from aiohttp.test_utils import TestClient, TestServer

from streamerhub.app import DB, HUB, build_app
from streamerhub.config import Settings, load_settings
from streamerhub.events.normalise import normalise
from streamerhub.events.store import EventStore
from streamerhub.fake_twitch import sample_event
from streamerhub.ffmpeg.jobstore import RunHistory
from streamerhub.web.auth import SETUP_TOKEN_FILE
from streamerhub.web.context import SERVICES

PASSWORD = "correct horse battery staple"
CHANNEL = "1000"


def settings_for(tmp_path: Path, db_url: str, extra: str = "", **env: str) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n{extra}')
    return load_settings(config, data_dir=str(tmp_path / "data"), env=env)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert found, "no CSRF token in the page"
    return found.group(1)


class Dash:
    """A running dashboard with one browser-like client (cookie jar included)."""

    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.app = client.app  # the TestServer's application

    @property
    def db(self) -> Any:
        return self.app[DB]

    @property
    def hub(self) -> Any:
        return self.app[HUB]

    def setup_token(self) -> str:
        return (self.settings.data_dir / SETUP_TOKEN_FILE).read_text().strip()

    async def csrf(self, path: str = "/login") -> str:
        resp = await self.client.get(path)
        return csrf_of(await resp.text())

    async def create_owner(self, login: str = "owner", password: str = PASSWORD) -> None:
        token = self.setup_token()
        page = await self.client.get(f"/setup/{token}")
        resp = await self.client.post(
            f"/setup/{token}",
            data={
                "csrf_token": csrf_of(await page.text()),
                "login": login,
                "password": password,
                "confirm": password,
            },
            allow_redirects=False,
        )
        assert resp.status == 303, await resp.text()

    async def login(self, login: str, password: str = PASSWORD) -> Any:
        return await self.client.post(
            "/login",
            data={"csrf_token": await self.csrf(), "login": login, "password": password},
            allow_redirects=False,
        )

    async def logout(self) -> None:
        await self.client.post("/logout", data={"csrf_token": await self.csrf("/")})

    async def add_user(self, login: str, role: str = "viewer", password: str = PASSWORD) -> Any:
        return await self.client.post(
            "/settings/users",
            data={
                "csrf_token": await self.csrf("/settings"),
                "login": login,
                "role": role,
                "password": password,
            },
            allow_redirects=False,
        )


@contextlib.asynccontextmanager
async def dashboard(tmp_path: Path, db_url: str, extra: str = "") -> AsyncIterator[Dash]:
    settings = settings_for(tmp_path, db_url, extra)
    app = build_app(settings)
    async with TestClient(TestServer(app)) as client:
        yield Dash(client, settings)


# ----------------------------------------------------------------------------- seeding


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def notification(sub_type: str, at: dt.datetime, channel: str = CHANNEL, **overrides: Any) -> Any:
    """A stored-ready event of `sub_type` that happened at `at` (Normalised, for EventStore)."""
    stamp = iso(at)
    if sub_type == "channel.follow":
        overrides.setdefault("followed_at", stamp)
    if sub_type == "stream.online":
        overrides.setdefault("started_at", stamp)
    overrides.setdefault("broadcaster_user_id", channel)
    if sub_type == "channel.raid":
        overrides.pop("broadcaster_user_id")
        overrides.setdefault("to_broadcaster_user_id", channel)
    version, event = sample_event(sub_type, **overrides)
    condition = (
        {"to_broadcaster_user_id": channel}
        if sub_type == "channel.raid"
        else {"broadcaster_user_id": channel}
    )
    payload = {
        "subscription": {"type": sub_type, "version": version, "condition": condition},
        "event": event,
    }
    return normalise(str(uuid.uuid4()), sub_type, version, stamp, payload)


async def add_channel(db: Any, channel: str = CHANNEL, login: str = "streamer") -> None:
    async with db.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO twitch_channels (channel_id, login, display_name) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            channel,
            login,
            login.title(),
        )


async def store_events(db: Any, data_dir: Path, items: list[Any], hub: Any = None) -> None:
    """Write events through the real store (raw + typed rows, committed, then published)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    async with EventStore(db, data_dir, publish=hub.events if hub else None) as store:
        for item in items:
            store.submit(item)
        await store.drain()


async def add_samples(
    db: Any,
    stream_id: str,
    start: dt.datetime,
    counts: list[int],
    channel: str = CHANNEL,
    every: int = 60,
) -> None:
    rows = [
        (channel, stream_id, (start + dt.timedelta(seconds=i * every)).replace(microsecond=0), n)
        for i, n in enumerate(counts)
    ]
    async with db.pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO viewer_samples (channel_id, stream_id, sampled_at, "
            "viewer_count) VALUES ($1, $2, $3, $4)",
            rows,
        )
