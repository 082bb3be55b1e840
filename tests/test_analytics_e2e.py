"""The daemon samples a live channel's viewers and Twitch's totals, and serves them as exports."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp
import asyncpg
import pytest
from test_eventsub import wait_until
from test_twitch_e2e import _store_channel

from streamerhub.fake_twitch import FakeTwitch

pytestmark = pytest.mark.e2e


async def test_daemon_samples_viewers_and_exports_them(daemon_factory, db_url: str) -> None:
    async with FakeTwitch() as fake, aiohttp.ClientSession() as http:
        await http.post(
            f"{fake.url}/_fake/live",
            json={"user_id": "1000", "live": True, "viewer_count": 321, "title": "Sampling test"},
        )
        await http.post(f"{fake.url}/_fake/followers", json={"user_id": "1000", "count": 42})
        env = {
            "STREAMERHUB_DATABASE_URL": db_url,
            "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
            "STREAMERHUB_TWITCH_API_URL": fake.api_url,
            "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
            "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
            "STREAMERHUB_ANALYTICS_SAMPLE_INTERVAL": "15",
        }
        daemon = daemon_factory(env=env)
        daemon.data_dir.mkdir(parents=True)
        await _store_channel(db_url, daemon.data_dir, fake)
        await asyncio.to_thread(daemon.start)
        conn = await asyncpg.connect(db_url)
        try:

            async def sampled() -> bool:
                return (
                    await conn.fetchval(
                        "SELECT count(*) FROM viewer_samples WHERE channel_id = '1000' "
                        "AND viewer_count = 321"
                    )
                    > 0
                )

            await wait_until(sampled, 30, "a viewer sample of the live channel")

            async def totals() -> bool:
                return (
                    await conn.fetchval(
                        "SELECT followers FROM twitch_totals WHERE channel_id = '1000' "
                        "ORDER BY taken_at DESC LIMIT 1"
                    )
                    == 42
                )

            await wait_until(totals, 30, "Twitch's follower total snapshotted")
        finally:
            await conn.close()

        token = (daemon.data_dir / "api-token").read_text().strip()
        sessions = await asyncio.to_thread(
            _get_json, f"{daemon.url}/api/v1/export/sessions?format=json&channel=streamer", token
        )
        assert sessions and sessions[0]["channel_id"] == "1000"
        assert sessions[0]["viewers_peak"] == 321 and sessions[0]["live"] is True
        assert token not in daemon.log()


def _get_json(url: str, token: str) -> list[dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())
