"""Dashboard access: setup link, passwords, sessions, CSRF, Host allow-list, roles, Twitch sign-in."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from web_support import PASSWORD, add_channel, csrf_of, dashboard
from yarl import URL

from streamerhub.fake_twitch import FakeTwitch

pytestmark = pytest.mark.e2e


async def test_setup_link_creates_the_owner_once(tmp_path: Path, db_url: str, capfd) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        token = dash.setup_token()
        assert f"/setup/{token}" in capfd.readouterr().err, "the setup link is printed at start"
        assert stat.S_IMODE((dash.settings.data_dir / "setup-token").stat().st_mode) == 0o600

        first = await dash.client.get("/")
        assert first.url.path == "/login" and "has no owner yet" in await first.text()
        wrong = await dash.client.get("/setup/not-the-token")
        assert wrong.status == 404 and "not valid" in await wrong.text()

        page = await dash.client.get(f"/setup/{token}")
        weak = await dash.client.post(
            f"/setup/{token}",
            data={
                "csrf_token": csrf_of(await page.text()),
                "login": "owner",
                "password": "short",
                "confirm": "short",
            },
        )
        assert weak.status == 400 and "at least 10 characters" in await weak.text()

        await dash.create_owner("Owner")
        overview = await dash.client.get("/")
        assert overview.status == 200 and "owner" in await overview.text()
        assert not (dash.settings.data_dir / "setup-token").exists()
        again = await dash.client.get(f"/setup/{token}")
        assert again.status == 410 and "already" in (await again.text()).lower()


async def test_password_login_cookie_logout(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await dash.create_owner()
        await dash.logout()
        assert (await dash.client.get("/settings")).url.path == "/login"

        bad = await dash.login("owner", "wrong password!!")
        assert bad.status == 401 and "Wrong login or password" in await bad.text()
        good = await dash.login("owner")
        assert good.status == 303
        cookie = good.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        key = dash.settings.data_dir / "session.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

        # Logging out ends the session on the server: replaying the old cookie gets nothing.
        stolen = {c.key: c.value for c in dash.client.session.cookie_jar}
        await dash.logout()
        dash.client.session.cookie_jar.update_cookies(stolen, URL(str(dash.client.make_url("/"))))
        replay = await dash.client.get("/settings", allow_redirects=False)
        assert replay.status == 303 and replay.headers["Location"].startswith("/login")

        # A password change ends every session; only the new password works afterwards.
        await dash.login("owner")
        changed = await dash.client.post(
            "/settings/password",
            data={
                "csrf_token": await dash.csrf("/settings"),
                "current": PASSWORD,
                "password": "a brand new passphrase",
                "confirm": "a brand new passphrase",
            },
        )
        assert changed.url.path == "/login" and "Sign in again" in await changed.text()
        assert (await dash.login("owner")).status == 401
        assert (await dash.login("owner", "a brand new passphrase")).status == 303


async def test_failed_logins_are_slowed_down(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await dash.create_owner()
        await dash.logout()
        for _ in range(3):
            await dash.login("owner", "nope nope nope")
        started = time.monotonic()
        await dash.login("owner", "nope nope nope")  # 4th: waits 1 s
        await dash.login("owner", "nope nope nope")  # 5th: waits 2 s
        assert time.monotonic() - started >= 3.0
        # Even the right password waits while the slow-down lasts, then signs in.
        assert (await dash.login("owner")).status == 303


async def test_post_without_csrf_token_is_refused(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await dash.create_owner()
        form = {"login": "mallory", "role": "owner", "password": PASSWORD}
        refused = await dash.client.post("/settings/users", data=form)
        page = await refused.text()
        assert refused.status == 403 and "security token" in page and "<h1>Not allowed</h1>" in page
        forged = await dash.client.post("/settings/users", data={**form, "csrf_token": "x" * 43})
        assert forged.status == 403
        other_site = await dash.client.post(
            "/settings/users",
            data={**form, "csrf_token": await dash.csrf("/settings")},
            headers={"Origin": "http://evil.example"},
        )
        assert other_site.status == 403
        api = await dash.client.post("/api/v1/targets", json={"name": "x"})
        assert api.status == 403
        users = await (await dash.client.get("/settings")).text()
        assert "mallory" not in users


async def test_foreign_host_is_refused(tmp_path: Path, db_url: str) -> None:
    async with dashboard(
        tmp_path, db_url, '[web]\nallowed_hosts = ["stats.example.org"]\n'
    ) as dash:
        evil = await dash.client.get("/login", headers={"Host": "evil.example"})
        assert evil.status == 421 and "allowed_hosts" in await evil.text()
        rebound = await dash.client.get("/healthz", headers={"Host": "attacker.test:8080"})
        assert rebound.status == 421
        for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "stats.example.org"):
            resp = await dash.client.get("/login", headers={"Host": host})
            assert resp.status == 200, host


async def test_viewer_can_look_but_not_change(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        await dash.create_owner()
        assert (await dash.add_user("mod", "viewer")).status == 303
        await dash.logout()
        assert (await dash.login("mod")).status == 303
        for path in ("/", "/events", "/streams", "/events/export?format=csv"):
            assert (await dash.client.get(path)).status == 200, path
        assert (await dash.client.get("/api/v1/targets")).status == 403  # multistream: owner's
        for path in ("/settings", "/multistream"):
            page = await dash.client.get(path)
            assert page.status == 403 and "viewer" in await page.text()
        token = await dash.csrf("/")
        refused = await dash.client.post(
            "/settings/users",
            data={"csrf_token": token, "login": "x", "role": "owner", "password": PASSWORD},
        )
        assert refused.status == 403
        api = await dash.client.post(
            "/api/v1/targets",
            headers={"X-CSRF-Token": token},
            json={"name": "t", "url": "rtmp://h/app", "stream_key": "k"},
        )
        assert api.status == 403
        assert "Settings" not in await (await dash.client.get("/")).text()


async def test_api_accepts_session_or_bearer_never_anonymous(tmp_path: Path, db_url: str) -> None:
    async with dashboard(tmp_path, db_url) as dash:
        assert (await dash.client.get("/api/v1/targets")).status == 401
        await dash.create_owner()
        token = await dash.csrf("/")
        made = await dash.client.post(
            "/api/v1/targets",
            headers={"X-CSRF-Token": token},
            json={
                "name": "Local",
                "url": "rtmp://127.0.0.1/live",
                "stream_key": "live_123_secretkey",
            },
        )
        assert made.status == 201
        assert "secretkey" not in await made.text()
        page = await (await dash.client.get("/multistream")).text()
        assert "secretkey" not in page
        # A wrong token does not fall back to the cookie (that request skipped the CSRF check).
        wrong = await dash.client.post(
            "/api/v1/targets", headers={"Authorization": "Bearer not-the-token"}, json={"name": "x"}
        )
        assert wrong.status == 401
        token = (dash.settings.data_dir / "api-token").read_text().strip()
        listed = await dash.client.get(
            "/api/v1/targets", headers={"Authorization": f"Bearer {token}"}
        )
        assert listed.status == 200 and [t["name"] for t in await listed.json()] == ["Local"]


async def twitch_round_trip(dash, purpose: str):
    """Start → the fake's authorize → our callback, whose page bounces (meta refresh: a same-site
    navigation, so the SameSite=Strict cookie comes along) to /finish."""
    bounce = await dash.client.get(f"/auth/twitch?purpose={purpose}")
    text = await bounce.text()
    assert bounce.url.path == "/auth/twitch/callback" and 'http-equiv="refresh"' in text
    target = text.split("url=", 1)[1].split('"', 1)[0].replace("&amp;", "&")
    return await dash.client.get(target)


async def test_sign_in_with_twitch(tmp_path: Path, db_url: str) -> None:
    async with FakeTwitch() as fake:
        extra = (
            f'[twitch]\nclient_id = "{fake.client_id}"\nauth_url = "{fake.auth_url}"\n'
            f'api_url = "{fake.api_url}"\n'
        )
        async with dashboard(tmp_path, db_url, extra) as dash:
            await dash.create_owner()
            await dash.logout()
            # Not allowed yet: the fake's user "streamer" is no connected channel.
            refused = await twitch_round_trip(dash, "signin")
            assert refused.status == 400 and "not allowed to sign in" in await refused.text()
            assert (await dash.client.get("/")).url.path == "/login"
            await add_channel(dash.db, "1000", "streamer")
            done = await twitch_round_trip(dash, "signin")
            assert done.status == 200
            overview = await (await dash.client.get("/")).text()
            assert "streamer" in overview and "role-owner" in overview


async def test_connect_channel_in_the_browser_stores_sealed_tokens(
    tmp_path: Path, db_url: str
) -> None:
    async with FakeTwitch() as fake:
        extra = (
            f'[twitch]\nclient_id = "{fake.client_id}"\nauth_url = "{fake.auth_url}"\n'
            f'api_url = "{fake.api_url}"\n'
        )
        async with dashboard(tmp_path, db_url, extra) as dash:
            await dash.create_owner()
            settings = await twitch_round_trip(dash, "connect")
            html = await settings.text()
            assert settings.url.path == "/settings" and "Connected the Twitch channel" in html
            async with dash.db.pool.acquire() as conn:
                row = await conn.fetchrow("SELECT * FROM twitch_channels")
            assert row["login"] == "streamer" and row["access_token_sealed"]
            issued = [t.access_token for t in fake.state.tokens.values()]
            assert not any(token in html for token in issued)
            # The job form's category search asks Twitch with the connected channel's token.
            found = await (await dash.client.get("/multistream/categories?q=chat")).json()
            assert "Just Chatting" in [c["name"] for c in found]
