"""The chat bot's own Twitch account: sealed at rest (and re-sealed with the master key), connected
in a real browser with exactly the scopes it needs, speaking on Twitch's app-token path; the page
says who speaks and what is missing, and a moderator in the viewer role may read it on a phone."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from conftest import make_settings
from test_browser import (
    PASSWORD,
    become_owner,
    chromium,
    new_page,
    no_script_errors,  # the autouse fixture: pages ran without script errors
    require_chromium,
    shot,
)
from test_chatbot_browser import WIDER_THAN_SCREEN, reload_until
from test_chatbot_e2e import Api, chat, start_daemon
from test_eventsub import wait_until

from streamerhub.bot.botaccount import BOT_SCOPES, BotAccountStore, TwitchBotAccount
from streamerhub.bot.chat import BOT_ACCOUNT, BotChatSender, Runners
from streamerhub.bot.helix import Helix
from streamerhub.bot.oauth import Grant, TokenRevoked
from streamerhub.crypto import load_keyring
from streamerhub.db import Database
from streamerhub.fake_twitch import FakeTwitch
from streamerhub.fake_twitch.chat import room
from streamerhub.keys import has_sealed_secrets, rotate_master_key

BOT_ID, BOT_LOGIN = "2000", "hub_bot"
SECRET = "fake-client-secret"


async def test_the_bot_accounts_tokens_are_sealed_and_follow_a_key_rotation(
    tmp_path: Path, db: Database
) -> None:
    ring = load_keyring(tmp_path, {}, create=True)
    store = BotAccountStore(db, ring)
    await store.save_login(
        BOT_ID, BOT_LOGIN, BOT_LOGIN, Grant("acc-123456", "ref-654321", 600, BOT_SCOPES)
    )
    row = await db.pool.fetchrow("SELECT * FROM twitch_bot_accounts")
    assert b"acc-123456" not in row["access_token_sealed"]
    assert b"ref-654321" not in row["refresh_token_sealed"]
    assert await has_sealed_secrets(db)  # so a lost master key is an error, not a fresh start

    new, count = await rotate_master_key(db, tmp_path, ring)
    assert count == 2
    opened = await BotAccountStore(db, new).current()
    assert opened is not None
    assert (opened.access_token, opened.refresh_token) == ("acc-123456", "ref-654321")
    assert opened.scopes == BOT_SCOPES and opened.status == "connected"

    # One bot account: connecting another replaces it.
    await store.save_login(
        "2001", "other_bot", "other_bot", Grant("a2-123456", "", 600, BOT_SCOPES)
    )
    assert await db.pool.fetchval("SELECT array_agg(account_id) FROM twitch_bot_accounts") == [
        "2001"
    ]


class OneChannel(Runners):
    """Channel 1000 running, with its own token able to speak (user:write:chat)."""

    def __init__(self, helix: Helix) -> None:
        super().__init__(lambda: None)
        self.one = helix

    def helix(self, channel_id: str) -> Helix | None:
        return self.one

    def scopes(self, channel_id: str) -> frozenset[str]:
        return frozenset({"user:write:chat", "channel:bot"})


async def test_a_revoked_bot_grant_silences_the_bot_and_says_why(
    tmp_path: Path, db: Database
) -> None:
    async with FakeTwitch(client_secret=SECRET) as fake, aiohttp.ClientSession() as http:
        fake.state.add_user(BOT_ID, BOT_LOGIN, "Hub_Bot")
        env = {
            "STREAMERHUB_TWITCH_CLIENT_ID": fake.client_id,
            "STREAMERHUB_TWITCH_CLIENT_SECRET": SECRET,
            "STREAMERHUB_TWITCH_AUTH_URL": fake.auth_url,
            "STREAMERHUB_TWITCH_API_URL": fake.api_url,
        }
        settings = make_settings(tmp_path, **env)
        bot_grant = fake.state.issue_token(BOT_ID, list(BOT_SCOPES), fake.client_id)
        account = TwitchBotAccount(settings, db, load_keyring(tmp_path, {}, create=True))
        await account.store.save_login(
            BOT_ID, BOT_LOGIN, BOT_LOGIN, Grant.from_json(bot_grant.grant_json())
        )
        await account.start()
        try:
            streamer = fake.state.default_token
            helix = Helix(http, fake.api_url, fake.client_id, _Fixed(streamer.access_token))
            sender = BotChatSender(OneChannel(helix), account)
            room(fake.state).moderators["1000"] = {BOT_ID}
            assert await account.token.validate() if account.token else False
            assert (await sender.send("1000", "hello from the bot")).sent
            assert room(fake.state).sent[-1]["sender_id"] == BOT_ID
            assert sender.speaker("1000").missing == ()

            fake.state.revoke(bot_grant)  # the bot account disconnects the app on Twitch
            with pytest.raises(TokenRevoked):
                await account.token.validate()
            status, reason = await db.pool.fetchrow(
                "SELECT status, status_reason FROM twitch_bot_accounts"
            )
            assert status == "disconnected" and "connect the bot account again" in reason

            answer = await sender.send("1000", "still there?")
            assert not answer.sent and f"the bot account {BOT_LOGIN} is disconnected" in str(
                answer.reason
            )
            assert [m["message"] for m in room(fake.state).sent] == ["hello from the bot"]
            speaker = sender.speaker("1000")
            assert speaker.how == BOT_ACCOUNT and "disconnected" in speaker.missing[0]
        finally:
            await account.stop()


async def test_daemons_sharing_the_database_refresh_the_bot_grant_once(
    tmp_path: Path, db: Database
) -> None:
    async with FakeTwitch() as fake:
        fake.state.add_user(BOT_ID, BOT_LOGIN, "Hub_Bot")
        settings = make_settings(
            tmp_path,
            STREAMERHUB_TWITCH_CLIENT_ID=fake.client_id,
            STREAMERHUB_TWITCH_AUTH_URL=fake.auth_url,
        )
        ring = load_keyring(tmp_path, {}, create=True)
        grant = fake.state.issue_token(BOT_ID, list(BOT_SCOPES), fake.client_id)
        one, two = TwitchBotAccount(settings, db, ring), TwitchBotAccount(settings, db, ring)
        await one.store.save_login(
            BOT_ID, BOT_LOGIN, BOT_LOGIN, Grant.from_json(grant.grant_json())
        )
        await one.start()
        await two.start()
        try:
            assert one.token is not None and two.token is not None
            stale = grant.access_token
            fresh = await one.token.refresh(stale)  # daemon one: Twitch rotates the pair
            # Daemon two, with the same stale token: adopts the new pair, asks Twitch nothing.
            assert await two.token.refresh(stale) == fresh
            assert two.token.revoked is None and one.token.refreshes == 1
            assert two.token.refreshes == 0
            assert await two.token.validate()  # and Twitch still accepts the grant
            stored = await one.store.current()
            assert stored is not None and stored.status == "connected"
            assert stored.access_token == fresh
        finally:
            await one.stop()
            await two.stop()


class _Fixed:
    channel_id = "1000"

    def __init__(self, token: str) -> None:
        self.token = token

    def access_token(self) -> str:
        return self.token

    async def refresh(self, stale: str) -> str:
        return self.token


@pytest.mark.e2e
@pytest.mark.browser
async def test_connect_a_bot_account_in_the_browser_and_it_speaks(
    daemon_factory, db_url: str
) -> None:
    require_chromium()
    env = {"STREAMERHUB_TWITCH_CLIENT_SECRET": SECRET, "STREAMERHUB_CONDUIT_MODE": "websocket"}
    async with FakeTwitch(client_secret=SECRET) as fake, aiohttp.ClientSession() as http:
        fake.state.add_user(BOT_ID, BOT_LOGIN, "Hub_Bot")
        daemon = await start_daemon(daemon_factory, db_url, fake, env=env)
        try:
            async with chromium() as browser:
                await _scenario(browser, http, fake, daemon, db_url)
        except BaseException:
            print(daemon.log()[-6000:])
            raise
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        log = daemon.log()
        assert "Traceback" not in log
        for token in fake.state.tokens.values():
            for secret in (token.access_token, token.refresh_token):
                at = log.find(secret) if secret else -1
                assert at < 0, (
                    f"{token.user_id or 'app'} token in the log: {log[at - 300 : at + 50]}"
                )


async def _scenario(
    browser: Any, http: aiohttp.ClientSession, fake: FakeTwitch, daemon: Any, db_url: str
) -> None:
    page = await new_page(browser)
    await become_owner(page, daemon)
    await page.goto(f"{daemon.url}/chatbot")
    assert "No separate bot account" in await page.inner_text("#bot-account")
    assert "own account" in await page.inner_text("#speaker-1000")

    # The owner connects the bot account: Twitch asks it for user:bot and user:write:chat only.
    fake.state.settings.authorize_user = BOT_ID
    await page.click("#connect-bot-account")
    await page.wait_for_selector("text=The chat bot now speaks as hub_bot")
    assert "hub_bot" in await page.inner_text("#bot-account")
    granted = [t for t in fake.state.tokens.values() if t.user_id == BOT_ID]
    assert [sorted(t.scopes) for t in granted] == [sorted(BOT_SCOPES)]
    # The channel was connected before it granted channel:bot: the page says what to do.
    row = await page.inner_text("#speaker-1000")
    assert "hub_bot" in row and "Chat Bot badge" in row, row
    assert "channel:bot from the channel" in row and "/mod hub_bot" in row, row
    await shot(page, "22-chatbot-bot-account")

    conn = await asyncpg.connect(db_url)
    try:
        sealed = await conn.fetchval("SELECT access_token_sealed FROM twitch_bot_accounts")
    finally:
        await conn.close()
    assert granted[0].access_token.encode() not in sealed

    # A command answered by the bot account, on the app-token path (sender = the bot).
    api = Api(http, daemon)
    await api.call("PUT", "/channels/1000", {"enabled": True})
    account = (await api.call("GET", ""))["account"]
    assert account["bot_account"] == {"login": BOT_LOGIN, "status": "connected", "reason": None}
    [speaker] = account["speakers"]
    assert speaker["login"] == BOT_LOGIN and "channel:bot" in speaker["missing"][0]
    hello = {"name": "hello", "response": "Hi {user}!", "cooldown_s": 0, "user_cooldown_s": 0}
    await api.call("POST", "/commands", hello, 201)

    # Twitch's rule: without the broadcaster's channel:bot the bot must be a moderator.
    await chat(http, fake, "!hello", user_name="Fan_Two")
    await wait_until(
        lambda: api.log_has(outcome="refused", text="Hi Fan_Two!"), 10, "refusal logged"
    )
    assert not room(fake.state).sent
    async with http.post(
        f"{fake.url}/_fake/chat/moderators",
        json={"broadcaster_user_id": "1000", "user_ids": [BOT_ID]},
    ):
        pass
    await chat(http, fake, "!hello", user_name="Fan_Three")
    await wait_until(lambda: room(fake.state).sent, 10, "the bot's reply as a moderator")
    sent = room(fake.state).sent[-1]
    assert (sent["message"], sent["sender_id"]) == ("Hi Fan_Three!", BOT_ID)

    # A moderator in the viewer role reads the page at phone width, and changes nothing.
    await page.goto(f"{daemon.url}/settings")
    await page.fill("#add-user input[name=login]", "moderator")
    await page.fill("#add-user input[name=password]", PASSWORD)
    await page.click("#add-user button[type=submit]")
    await page.wait_for_selector("text=Added moderator (viewer).")
    phone = await browser.new_context(viewport={"width": 390, "height": 844})
    small = await phone.new_page()
    await small.goto(f"{daemon.url}/login")
    await small.fill("input[name=login]", "moderator")
    await small.fill("input[name=password]", PASSWORD)
    await small.click("button[type=submit]")
    await small.wait_for_url(f"{daemon.url}/")
    await small.click("header nav a:has-text('Chat bot')")
    await reload_until(small, "#log-table td:has-text('Hi Fan_Three!')")
    assert "hub_bot" in await small.inner_text("#bot-account")
    assert await small.locator("form[action^='/chatbot']").count() == 0
    assert await small.locator("#connect-bot-account").count() == 0
    assert await small.inner_text("#command-table") != ""
    width = await small.evaluate("document.documentElement.scrollWidth")
    wide = await small.evaluate(WIDER_THAN_SCREEN)
    assert width <= 392, f"the page scrolls sideways at phone width ({width} px): {wide}"
    await shot(small, "23-chatbot-viewer-phone")
    status = await small.evaluate("""async () => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const r = await fetch('/chatbot/account/disconnect', {method: 'POST',
            body: new URLSearchParams({csrf_token: csrf})});
        return r.status; }""")
    assert status == 403
    await phone.close()

    # Disconnecting the bot account: the channel's own account speaks again.
    page.on("dialog", _accept)
    await page.goto(f"{daemon.url}/chatbot")
    await page.click("#disconnect-bot-account")
    await page.wait_for_selector("text=No separate bot account")
    await chat(http, fake, "!hello", user_name="Fan_Four")
    await wait_until(lambda: room(fake.state).sent[-1]["message"] == "Hi Fan_Four!", 10, "own")
    assert room(fake.state).sent[-1]["sender_id"] == "1000"


async def _accept(dialog: Any) -> None:
    await dialog.accept()
