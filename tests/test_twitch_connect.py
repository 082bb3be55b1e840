"""Connecting Twitch entirely in the browser: the owner enters the application's Client ID and
secret on Settings, Twitch (the fake) checks them, the secret is kept sealed, and the running bot
picks them up without a restart; config.toml / the environment still win."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streamerhub.bot.credentials import AppRejected, TwitchApp
from streamerhub.bot.service import BotDeps, TwitchBot
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.events.store import EventStore
from streamerhub.fake_twitch import FakeTwitch
from streamerhub.keys import rotate_master_key

SECRET = "dashboard-secret-4f9a1c"
WRONG = "not-the-secret-77e2b0"


def _urls(fake: FakeTwitch) -> dict[str, str]:
    return {
        "STREAMERHUB_TWITCH_API_URL": fake.api_url,
        "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
        "STREAMERHUB_TWITCH_EVENTSUB_URL": fake.ws_url,
    }


async def test_credentials_are_checked_sealed_resealed_and_picked_up_by_the_running_bot(
    db: Database, tmp_path: Path
) -> None:
    keyring = Keyring(AESGCM.generate_key(bit_length=256))
    async with FakeTwitch(client_secret=SECRET) as fake:
        settings = make_settings(tmp_path, **_urls(fake))
        settings.data_dir.mkdir(parents=True)
        app = TwitchApp(settings, db, keyring)
        await app.load()
        assert app.source == "" and not app.client_id

        (tmp_path / "spool").mkdir()
        async with EventStore(db, tmp_path / "spool") as store:
            bot = TwitchBot(BotDeps(settings, db, keyring, store, app))
            app.listeners.append(bot.reload)
            await bot.start()
            try:
                assert bot.client_id == "" and bot.conduit is None and bot.app_token is None

                # A wrong secret: Twitch's refusal in words, nothing stored, the bot untouched.
                with pytest.raises(AppRejected) as refused:
                    await app.save(fake.client_id, WRONG)
                message = str(refused.value)
                assert "Twitch refused this Client ID and Client secret" in message
                assert "invalid client secret" in message and WRONG not in message
                assert "dev.twitch.tv/console/apps" in message
                assert app.source == "" and bot.client_id == ""
                with pytest.raises(AppRejected, match="both the Client ID and the Client"):
                    await app.save(fake.client_id, "")

                # The right one: stored sealed, and the running bot uses it now (no restart):
                # its OAuth client, the app token, and conduit mode (a secret is set: auto).
                await app.save(f"  {fake.client_id} ", SECRET)
                assert app.source == "dashboard" and app.secret_set
                assert bot.client_id == fake.client_id and bot.oauth.client_secret == SECRET
                assert bot.app_token is not None and bot.conduit is not None
                assert await bot.app_token.ensure()
            finally:
                await bot.stop()

        async with db.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT client_id, client_secret_sealed FROM twitch_app")
        assert row["client_id"] == fake.client_id
        assert SECRET.encode() not in bytes(row["client_secret_sealed"])

        # An empty secret keeps the stored one (the page never shows it back).
        await app.save(fake.client_id, "")

        # A master-key rotation re-seals it, and it opens under the new key only.
        new_ring, resealed = await rotate_master_key(db, settings.data_dir, keyring)
        assert resealed >= 1
        again = TwitchApp(settings, db, new_ring)
        await again.load()
        assert again.twitch.client_secret == SECRET and again.source == "dashboard"
        stale = TwitchApp(settings, db, keyring)
        await stale.load()  # a secret that will not open is ignored, not fatal
        assert stale.source == "" and not stale.secret_set

        # config.toml / the environment win, and saving here says where to change them.
        configured = make_settings(
            tmp_path,
            **_urls(fake),
            STREAMERHUB_TWITCH_CLIENT_ID="from-config",
            STREAMERHUB_TWITCH_CLIENT_SECRET="config-secret",
        )
        ruled = TwitchApp(configured, db, new_ring)
        await ruled.load()
        assert ruled.source == "config" and ruled.client_id == "from-config"
        with pytest.raises(AppRejected, match="config.toml or the environment"):
            await ruled.save(fake.client_id, SECRET)


async def test_first_start_setup_connect_twitch_in_the_browser_then_the_live_feed(
    daemon_factory: Any, db_url: str
) -> None:
    from test_browser import (
        PROBLEMS,
        become_owner,
        chromium,
        new_page,
        post_fake,
        require_chromium,
        setup_link,
        shot,
        wait_for_bot,
    )

    require_chromium()
    PROBLEMS.clear()
    async with FakeTwitch(client_secret=SECRET) as fake:
        # No client id or secret anywhere: only where Twitch is (the fake).
        config = (
            f'[database]\nurl = "{db_url}"\n[twitch]\napi_url = "{fake.api_url}"\n'
            f'auth_url = "{fake.auth_url}"\neventsub_url = "{fake.ws_url}"\n'
        )
        daemon = daemon_factory(config).start()
        callback = f"{daemon.url}/auth/twitch/callback"
        async with chromium() as browser:
            page = await new_page(browser)
            await page.goto(setup_link(daemon))
            assert callback in await page.inner_text("#setup-twitch-next")
            await become_owner(page, daemon)

            await page.goto(f"{daemon.url}/settings#twitch")
            steps = await page.inner_text("#twitch-register")
            assert callback in steps and "Confidential" in steps
            assert await page.get_attribute(
                "#twitch-register a[href^='https://dev.twitch.tv/console']", "href"
            )
            assert not await page.is_visible("#connect-twitch")
            await shot(page, "twitch-connect-1-register")

            await page.fill("#twitch-app-form input[name=client_id]", fake.client_id)
            await page.fill("#twitch-app-form input[name=client_secret]", WRONG)
            await page.click("#twitch-app-form button[type=submit]")
            error = await page.inner_text("#twitch-app-error")
            assert "Twitch refused this Client ID and Client secret" in error
            assert WRONG not in await page.content()
            await shot(page, "twitch-connect-2-wrong-secret")

            await page.fill("#twitch-app-form input[name=client_secret]", SECRET)
            await page.click("#twitch-app-form button[type=submit]")
            await page.wait_for_selector("text=Twitch accepted the application")
            assert await page.is_visible("#twitch-secret-set")
            assert SECRET not in await page.content()
            await shot(page, "twitch-connect-3-saved")

            await page.click("#connect-twitch")  # the fake approves at once, as "streamer"
            await page.wait_for_selector("text=Connected the Twitch channel streamer")
            await shot(page, "twitch-connect-4-connected")

            await page.goto(f"{daemon.url}/?period=day")
            await page.wait_for_selector("#feed-status.live")
            await wait_for_bot(fake)
            await post_fake(fake, "channel.cheer", {"user_login": "fan", "bits": 777})
            await page.wait_for_selector("#feed li:has-text('cheered 777 bits')", timeout=10_000)
            await shot(page, "twitch-connect-5-live-feed")
        assert not PROBLEMS, PROBLEMS
        assert SECRET not in daemon.log()


async def test_the_terminal_login_uses_the_application_entered_on_the_dashboard(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamerhub.bot.oauth import LOGIN_SCOPES
    from streamerhub.commands.twitch import _login
    from streamerhub.crypto import write_key_file
    from streamerhub.errors import ConfigError

    key = AESGCM.generate_key(bit_length=256)
    async with FakeTwitch(client_secret=SECRET, device_interval=0.05) as fake:
        settings = make_settings(tmp_path, **_urls(fake))
        settings.data_dir.mkdir(parents=True)
        write_key_file(settings.data_dir / "master.key", key)
        with pytest.raises(ConfigError, match="client_id is empty"):
            await _login(db, settings, LOGIN_SCOPES)  # nothing entered anywhere yet
        await TwitchApp(settings, db, Keyring(key)).save(fake.client_id, SECRET)
        assert await _login(db, settings, LOGIN_SCOPES) == 0
    assert "Connected Twitch channel Streamer" in capsys.readouterr().out


async def test_the_page_says_when_config_sets_the_application_and_keeps_it(
    tmp_path: Path, db_url: str
) -> None:
    from web_support import csrf_of, dashboard

    nowhere = "http://127.0.0.1:9"  # the discard port: nothing here is asked anything
    extra = (
        f'[twitch]\nclient_id = "from-config"\nclient_secret = "config-secret-9z1"\n'
        f'api_url = "{nowhere}"\nauth_url = "{nowhere}"\neventsub_url = "ws://127.0.0.1:9"\n'
        '[conduit]\nmode = "websocket"\n'
    )
    async with dashboard(tmp_path, db_url, extra) as dash:
        await dash.create_owner()
        page = await (await dash.client.get("/settings")).text()
        assert 'id="twitch-app-config"' in page and "from-config" in page
        assert "which win over this page" in page and "config-secret-9z1" not in page
        assert 'id="twitch-app-form"' not in page
        refused = await dash.client.post(
            "/settings/twitch-app",
            data={"csrf_token": csrf_of(page), "client_id": "other", "client_secret": "x"},
        )
        assert refused.status == 400
        assert "config.toml or the environment, which win" in await refused.text()
