"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright, against
`streamerhub run` as a subprocess, the fake Twitch and a local RTMP listener.

Every page visited is saved as a screenshot in test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from media import make_clip
from nginx_rtmp import NginxRtmp, needs_nginx
from web_support import PASSWORD, add_channel, add_samples, notification, store_events

from streamerhub.bot.oauth import Grant
from streamerhub.bot.tokens import TokenStore
from streamerhub.crypto import Keyring, write_key_file
from streamerhub.db import Database, create_pool
from streamerhub.fake_twitch import FakeTwitch

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# Chromium or Chrome, found the way Playwright users expect: a configured path, else the system's
# browser by name (Debian's chromium, Ubuntu's snap chromium-browser, Google Chrome), else a
# browser Playwright downloaded itself (`playwright install chromium`).
BROWSER_ENV = "STREAMERHUB_BROWSER"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
NOW = dt.datetime.now(dt.timezone.utc)


def find_browser(env: dict[str, str] | None = None) -> str | None:
    """The browser to drive: $STREAMERHUB_BROWSER, a Chromium/Chrome on PATH, or Playwright's own."""
    env = dict(os.environ) if env is None else env
    if env.get(BROWSER_ENV):
        return env[BROWSER_ENV] if os.access(env[BROWSER_ENV], os.X_OK) else None
    for name in BROWSER_NAMES:
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return found
    cache = Path(env.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    downloaded = sorted(cache.glob("chromium-*/chrome-linux*/chrome"))
    return str(downloaded[-1]) if downloaded else None


MISSING_BROWSER = (
    "no Chromium or Chrome found for the browser tests: install one (Debian: apt-get install "
    "chromium; Ubuntu: snap install chromium; or `python -m playwright install chromium`) or set "
    f"{BROWSER_ENV}=/path/to/chrome"
)


def require_chromium() -> str:
    """The browser's path. On CI a missing browser is a failure (.ci/run installs it); elsewhere
    a skip that says what to install."""
    found = find_browser()
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(MISSING_BROWSER)
    pytest.skip(MISSING_BROWSER)


@contextlib.asynccontextmanager
async def chromium(*extra_args: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    executable = require_chromium()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            await browser.close()


DIALOGS: list[str] = []  # confirm() questions the pages asked
PROBLEMS: list[str] = []  # script errors and CSP refusals seen by any page of the running test


async def new_page(browser: Any, width: int = 1360, scheme: str = "light", **opts: Any) -> Any:
    context = await browser.new_context(
        viewport={"width": width, "height": 900}, color_scheme=scheme, **opts
    )
    page = await context.new_page()
    page.set_default_timeout(15_000)
    page.on("pageerror", lambda exc: PROBLEMS.append(f"{page.url}: {exc}"))
    page.on(
        "console",
        lambda msg: (
            PROBLEMS.append(f"{page.url}: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    return page


@pytest.fixture(autouse=True)
def no_script_errors() -> Any:
    """Every page ran its scripts without an error or a Content-Security-Policy refusal."""
    PROBLEMS.clear()
    yield
    assert not PROBLEMS, PROBLEMS


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def setup_link(daemon: Any) -> str:
    """The printed link's token, read from the data dir (stderr has it; no log line does)."""
    token = (daemon.data_dir / "setup-token").read_text().strip()
    logged = [line for line in daemon.log().splitlines() if line.startswith("{")]
    assert not [line for line in logged if token in line], "the setup token leaked into the log"
    return f"{daemon.url}/setup/{token}"


async def become_owner(page: Any, daemon: Any) -> None:
    await page.goto(setup_link(daemon))
    await shot(page, "01-setup")
    await page.fill("input[name=login]", "owner")
    await page.fill("input[name=password]", PASSWORD)
    await page.fill("input[name=confirm]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{daemon.url}/")


# ----------------------------------------------------------------------------- seeding


async def seed(db_url: str, data_dir: Path, fake: FakeTwitch) -> None:
    """History for channel 1000, and its tokens sealed under the daemon's future master key."""
    db = Database(await create_pool(db_url, 2), db_url)
    try:
        await add_channel(db)
        key = secrets.token_bytes(32)
        write_key_file(data_dir / "master.key", key)
        token = fake.state.issue_token("1000", client_id=fake.client_id)
        await TokenStore(db, Keyring(key)).save_login(
            "1000", "streamer", "Streamer", Grant.from_json(token.grant_json())
        )
        start = NOW - dt.timedelta(days=20)
        items = [notification("stream.online", start, id="stream-old")]
        items += [
            notification(
                "channel.follow",
                start + dt.timedelta(minutes=i),
                user_id=str(8000 + i),
                user_login=f"fan{i}",
                user_name=f"Fan{i}",
            )
            for i in range(40)
        ]
        items += [
            notification(
                "channel.cheer",
                start + dt.timedelta(minutes=50),
                bits=2500,
                user_login="big_cheerer",
                user_name="Big_Cheerer",
            ),
            notification(
                "channel.subscription.gift",
                start + dt.timedelta(minutes=55),
                total=10,
                user_login="generous",
                user_name="Generous",
            ),
            notification("stream.offline", start + dt.timedelta(hours=2)),
            notification(
                "channel.follow",
                NOW - dt.timedelta(minutes=20),
                user_id="9001",
                user_login="today_fan",
                user_name="Today_Fan",
            ),
            notification(
                "channel.subscribe",
                NOW - dt.timedelta(minutes=10),
                user_login="new_sub",
                user_name="New_Sub",
            ),
        ]
        await store_events(db, data_dir / "seed", items)
        await add_samples(db, "stream-old", start, [12, 30, 48, 55, 61, 58, 40, 33] * 15)
    finally:
        await db.close()


def daemon_config(db_url: str, fake: FakeTwitch) -> str:
    return (
        f'[database]\nurl = "{db_url}"\n'
        f'[twitch]\nclient_id = "{fake.client_id}"\napi_url = "{fake.api_url}"\n'
        f'auth_url = "{fake.auth_url}"\neventsub_url = "{fake.ws_url}"\n'
    )


async def card_text(page: Any, key: str) -> str:
    return await page.inner_text(f'[data-card="{key}"]')


# ----------------------------------------------------------------------------- owner journey


async def test_owner_journey_feed_periods_and_guards(
    daemon_factory, db_url: str, tmp_path: Path
) -> None:
    require_chromium()
    async with FakeTwitch() as fake:
        daemon = daemon_factory(daemon_config(db_url, fake))
        daemon.data_dir.mkdir(parents=True, exist_ok=True)
        await seed(db_url, daemon.data_dir, fake)
        daemon.start()
        async with chromium("--host-resolver-rules=MAP rebind.test 127.0.0.1") as browser:
            page = await new_page(browser)
            await become_owner(page, daemon)

            # Overview: cards from the seeded history, then the period selector.
            await page.wait_for_selector('[data-card="followers"]')
            await page.wait_for_selector("#chart-events canvas")
            week = await card_text(page, "followers")
            await shot(page, "02-overview-week")
            await page.click('a[data-period="all"]')
            await page.wait_for_url(re.compile(r"period=all"))
            everything = await card_text(page, "followers")
            assert "+1 in this period" in week and "+41 in this period" in everything
            assert "2,500" in await card_text(page, "bits")
            await shot(page, "03-overview-all-time")

            for path, name in (
                ("/events", "05-events"),
                ("/streams", "06-streams"),
                ("/streams/1000/stream-old", "07-stream"),
                ("/settings", "08-settings"),
            ):
                response = await page.goto(daemon.url + path)
                assert response.status == 200, path
                await shot(page, name)
            assert await page.is_visible("text=Connect a Twitch channel")

            # A state-changing request without the page's CSRF token is refused.
            status = await page.evaluate("""() => fetch('/settings/users', {method: 'POST',
                body: new URLSearchParams({login: 'mallory', role: 'owner',
                                           password: 'mallory-password'})}).then(r => r.status)""")
            assert status == 403

            # Add a viewer through the Settings form, then look around as that viewer.
            await page.fill("#add-user input[name=login]", "moderator")
            await page.fill("#add-user input[name=password]", PASSWORD)
            await page.click("#add-user button[type=submit]")
            await page.wait_for_selector("text=Added moderator (viewer).")
            await viewer_cannot_change(browser, daemon)

            # DNS rebinding: a foreign name resolving to 127.0.0.1 gets nothing.
            rebound = await page.goto(f"http://rebind.test:{daemon.port}/")
            assert rebound.status == 421
            assert "does not answer to the host name" in await page.inner_text("body")
            await shot(page, "12-foreign-host")

            # The live feed: an event delivered by the fake Twitch shows up without a reload.
            await page.goto(f"{daemon.url}/?period=day")
            await page.wait_for_selector("#feed-status.live")
            await wait_for_bot(fake)
            await post_fake(
                fake,
                "channel.cheer",
                {"user_login": "feed_test", "bits": 4321, "user_name": "Feed_Test"},
            )
            await page.wait_for_selector("#feed li:has-text('cheered 4321 bits')", timeout=5000)
            # The cards follow the live feed without a reload.
            await page.wait_for_function(
                "() => document.querySelector('[data-card=bits] .value').textContent === '4,321'",
                timeout=10_000,
            )

            # A gift bomb: one row naming the gifter, its subs listed inside it, not 3 rows more.
            await post_fake(
                fake,
                "channel.subscription.gift",
                {"user_login": "bomber", "user_name": "Bomber", "total": 3},
            )
            for i in range(3):
                await post_fake(
                    fake,
                    "channel.subscribe",
                    {"user_login": f"lucky{i}", "user_name": f"Lucky{i}", "is_gift": True},
                )
            bomb = "#feed li.gift-bomb:has-text('Bomber gifted 3 subs')"
            await page.wait_for_selector(f"{bomb} summary:has-text('3 recipients')", timeout=5000)
            assert await page.locator("#feed li:has-text('got a gifted sub')").count() == 0
            assert await page.get_attribute(f"{bomb} .tag", "title") == "channel.subscription.gift"
            await shot(page, "04-overview-live-feed")


async def viewer_cannot_change(browser: Any, daemon: Any) -> None:
    page = await new_page(browser)
    await page.goto(f"{daemon.url}/login")
    await page.fill("input[name=login]", "moderator")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector('[data-card="followers"]')
    nav = await page.inner_text("header nav")
    assert "Overview" in nav and "Settings" not in nav and "Multistream" not in nav
    await shot(page, "09-viewer-overview")
    forbidden = await page.goto(f"{daemon.url}/settings")
    assert forbidden.status == 403
    await shot(page, "10-viewer-forbidden")
    await page.goto(f"{daemon.url}/events")
    statuses = await page.evaluate("""async () => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const h = {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'};
        const api = await fetch('/api/v1/targets', {method: 'POST', headers: h,
            body: JSON.stringify({name: 'x', url: 'rtmp://127.0.0.1/live', stream_key: 'k'})});
        const form = await fetch('/settings/users', {method: 'POST', body: new URLSearchParams(
            {csrf_token: csrf, login: 'evil', role: 'owner', password: 'evil-password!'})});
        const logout = await fetch('/settings/password', {method: 'POST', body:
            new URLSearchParams({csrf_token: csrf, password: 'x'.repeat(12),
                                 confirm: 'x'.repeat(12)})});
        return [api.status, form.status, logout.status];
    }""")
    assert statuses == [403, 403, 403]
    await page.context.close()


async def wait_for_bot(fake: FakeTwitch, timeout: float = 20) -> None:
    """Until the daemon's EventSub client holds an enabled channel.cheer subscription."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            async with http.get(f"{fake.url}/_fake/state") as resp:
                state = await resp.json()
            subs = [
                s
                for s in state.get("subscriptions", [])
                if s.get("type") == "channel.cheer" and s.get("status") == "enabled"
            ]
            if subs:
                return
            await asyncio.sleep(0.2)
    raise AssertionError("the daemon's EventSub client never subscribed to the fake Twitch")


async def post_fake(fake: FakeTwitch, sub_type: str, overrides: dict[str, Any]) -> None:
    from streamerhub.fake_twitch import sample_event

    version, event = sample_event(sub_type, **overrides)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{fake.url}/_fake/events",
            json={"subscription_type": sub_type, "subscription_version": version, "event": event},
        ) as resp:
            assert resp.status == 200 and (await resp.json())["delivered"] >= 1


# ----------------------------------------------------------------------------- phone and dark

PAGES = (
    "/",
    "/?period=all",
    "/events",
    "/streams",
    "/streams/1000/stream-old",
    "/settings",
    "/multistream",
)


async def seed_gift_bomb_and_poll(db_url: str, data_dir: Path) -> None:
    db = Database(await create_pool(db_url, 2), db_url)
    try:
        at = NOW - dt.timedelta(hours=3)
        items = [
            notification(
                "channel.subscription.gift", at, total=3, user_login="bomber", user_name="Bomber"
            )
        ]
        items += [
            notification(
                "channel.subscribe",
                at + dt.timedelta(seconds=1 + i),
                is_gift=True,
                user_login=f"lucky{i}",
                user_name=f"Lucky{i}",
            )
            for i in range(3)
        ]
        old = NOW - dt.timedelta(days=20)  # inside seed()'s stream-old: its chart's moments
        items.append(notification("channel.raid", old + dt.timedelta(minutes=30), viewers=77))
        items.append(notification("channel.update", old + dt.timedelta(minutes=62)))
        items.append(notification("channel.hype_train.begin", old + dt.timedelta(minutes=70)))
        items.append(
            notification(
                "channel.ad_break.begin", old + dt.timedelta(minutes=80), duration_seconds=90
            )
        )
        items.append(notification("channel.poll.begin", at + dt.timedelta(minutes=5)))
        items.append(notification("channel.hype_train.begin", at + dt.timedelta(minutes=6)))
        await store_events(db, data_dir / "seed-bomb", items)
    finally:
        await db.close()


async def test_every_page_fits_a_phone_and_a_desktop_light_and_dark(
    daemon_factory, db_url: str, tmp_path: Path
) -> None:
    """Each page at 1360 px and 390 px, light and dark: no sideways scrolling, no script error,
    a screenshot of each; the event browser in human words; the theme toggle."""
    require_chromium()
    async with FakeTwitch() as fake:
        daemon = daemon_factory(daemon_config(db_url, fake))
        daemon.data_dir.mkdir(parents=True, exist_ok=True)
        await seed(db_url, daemon.data_dir, fake)
        await seed_gift_bomb_and_poll(db_url, daemon.data_dir)
        daemon.start()
        async with chromium() as browser:
            # First start: the setup page preselects the browser's own time zone.
            page = await new_page(browser, timezone_id="America/New_York")
            await page.goto(setup_link(daemon))
            assert await page.input_value("#clock-timezone") == "America/New_York"
            await page.select_option("#clock-day-start", "6")
            await shot(page, "19-setup-time-zone")
            await page.fill("input[name=login]", "owner")
            await page.fill("input[name=password]", PASSWORD)
            await page.fill("input[name=confirm]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{daemon.url}/")
            assert "times in America/New_York" in await page.inner_text("footer")
            signed_in = await page.context.storage_state()
            await page.context.close()
            for width in (1360, 390):
                for scheme in ("light", "dark"):
                    page = await new_page(browser, width, scheme, storage_state=signed_in)
                    for path in PAGES:
                        response = await page.goto(daemon.url + path)
                        assert response.status == 200, (path, daemon.log()[-3000:])
                        await page.wait_for_load_state("load")
                        wide = await page.evaluate(
                            "() => [document.documentElement.scrollWidth, window.innerWidth]"
                        )
                        assert wide[0] <= wide[1], f"{path} at {width} px {scheme}: {wide}"
                        slug = path.strip("/").replace("/", "-").replace("?", "") or "overview"
                        await shot(page, f"20-{width}-{scheme}-{slug}")
                    background = await page.evaluate(
                        "() => getComputedStyle(document.documentElement).backgroundColor"
                    )
                    assert (background == "rgb(18, 16, 24)") == (scheme == "dark"), background
                    await page.context.close()

            # The event browser in human words: one row per gift bomb naming the gifter, its
            # recipients inside; friendly type names with the raw one on hover; a Who everywhere.
            page = await new_page(browser, 390, "light", storage_state=signed_in)
            await page.goto(f"{daemon.url}/events")
            rows = page.locator("#events-table tbody tr")
            assert await page.locator("#events-table tr:has-text('got a gifted sub')").count() == 0
            bomb = page.locator("#events-table tr:has-text('Bomber gifted 3 subs')")
            assert await bomb.locator(".tag").inner_text() == "Gift bomb"
            await bomb.locator("summary").click()
            assert "Lucky2" in await bomb.inner_text()
            hype = page.locator("#events-table tr[data-type='channel.hype_train.begin']")
            assert (
                await hype.first.locator(".tag").get_attribute("title")
                == "channel.hype_train.begin"
            )
            whos = await rows.evaluate_all("rows => rows.map(r => r.cells[2].innerText.trim())")
            assert whos and all(whos), whos
            await shot(page, "21-events-phone-gift-bomb")

            # The stream summary: its viewer curve marked with the raid, the title change and
            # the hype train, each listed in words under the chart.
            await page.goto(f"{daemon.url}/streams/1000/stream-old")
            await page.wait_for_selector("#chart-stream canvas")
            moments = await page.inner_text("#moments")
            assert "raided with 77 viewers" in moments and "Hype train" in moments, moments
            assert "Title:" in moments
            assert "Ad break, 90 s" in moments, moments  # and a band on the curve
            await shot(page, "23-stream-summary-phone")

            # The toggle: system → dark → light, kept across pages, charts redrawn without error.
            await page.goto(daemon.url + "/")
            await page.wait_for_selector("#chart-events canvas")
            await page.focus("#theme-toggle")
            await page.keyboard.press("Enter")
            assert await page.get_attribute("html", "data-theme") == "dark"
            await page.wait_for_selector("#chart-events canvas")
            await page.goto(daemon.url + "/events")
            assert await page.get_attribute("html", "data-theme") == "dark"
            assert "dark" in await page.inner_text("#theme-toggle")
            await shot(page, "22-events-phone-dark-by-toggle")


# ----------------------------------------------------------------------------- multistream


@needs_nginx
async def test_upload_job_live_and_stop(daemon_factory, db_url: str, tmp_path: Path) -> None:
    require_chromium()
    clip = make_clip(tmp_path / "rerun.mp4", seconds=6)
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n" * 50)
    async with FakeTwitch() as fake, NginxRtmp(record=False) as ingest:
        daemon = daemon_factory(daemon_config(db_url, fake)).start()
        async with chromium() as browser:
            page = await new_page(browser)
            await become_owner(page, daemon)

            def answer(dialog: Any) -> Any:
                DIALOGS.append(dialog.message)
                return dialog.accept()

            page.on("dialog", answer)
            await page.goto(f"{daemon.url}/multistream")
            await page.wait_for_selector("#targets-table td.empty")
            # Until the first job, a checklist says the order: targets, videos, jobs.
            await page.wait_for_selector("#checklist:not([hidden])")
            order = await page.evaluate(
                "() => [...document.querySelectorAll('#multistream > section')].map(s => s.id)"
            )
            # (Linked Twitch accounts belong to the targets step.)
            assert order == [
                "checklist",
                "targets-panel",
                "linked-panel",
                "library-panel",
                "jobs-panel",
            ], order

            # A bad URL is refused next to the form, in words.
            await page.fill("#target-form input[name=name]", "Broken")
            await page.fill("#target-form input[name=url]", "http://example.com/live")
            await page.fill("#target-form input[name=stream_key]", "abc")
            await page.click("#target-submit")
            await page.wait_for_selector("#target-form-error:not([hidden])")
            assert "rtmp" in (await page.inner_text("#target-form-error")).lower()

            await page.fill("#target-form input[name=name]", "Local ingest")
            await page.fill("#target-form input[name=url]", ingest.url)
            await page.fill("#target-form input[name=stream_key]", "live_4242_browsertest")
            await page.click("#target-submit")
            await page.wait_for_selector("#targets-table td:has-text('Local ingest')")
            assert "browsertest" not in await page.content()

            # Upload: the file's own row shows its progress, then says ready; a file that is
            # not a video says rejected with the reason, not "Uploaded".
            await page.set_input_files("#upload-file", str(clip))
            await page.click("#upload-form button[type=submit]")
            done = "#upload-list li[data-file='rerun.mp4']"
            await page.wait_for_selector(f"{done}[data-result=ready]", timeout=30_000)
            assert await page.get_attribute(f"{done} progress", "value") == "100"
            await page.wait_for_selector("#videos-table .state-ready")
            await page.set_input_files("#upload-file", str(bogus))
            await page.click("#upload-form button[type=submit]")
            bad = "#upload-list li[data-file='notes.mp4']"
            await page.wait_for_selector(f"{bad}[data-result=rejected]", timeout=30_000)
            assert (await page.inner_text(f"{bad} .upload-status")).startswith("Rejected:")
            await shot(page, "13-multistream-library")

            # A job to the local RTMP listener: the target goes live, then stop it.
            await page.click("#job-create summary")
            await page.fill("#job-form input[name=name]", "Browser rerun")
            # Chosen but not added to the playlist: the chosen video is what the job plays.
            await page.select_option("#job-video-pick", label="rerun.mp4")
            await page.click("#job-form button[type=submit]")  # no target chosen: said so
            await page.wait_for_selector("#job-form-error:not([hidden])")
            assert "targets" in await page.inner_text("#job-form-error")
            await page.check("#job-targets input[type=checkbox]")
            await page.select_option("#job-loop-mode", "forever")
            await page.click("#job-form button[type=submit]")
            await page.wait_for_selector(".job .targets-live .state-live", timeout=30_000)
            await ingest.wait_receiving("live_4242_browsertest", 0.5)
            await page.wait_for_selector(".job td.num:has-text('kbit/s')", timeout=15_000)
            await shot(page, "14-multistream-live")
            # The running FFmpeg's output, live, its key masked.
            await page.click(".job details.logs summary")
            await page.wait_for_selector(".job .live-log pre:has-text('Output #0')")
            assert "/live/••••" in await page.inner_text(".job .live-log pre")
            assert "browsertest" not in await page.content()
            assert await page.is_hidden("#checklist")
            await page.click(".job button:has-text('Stop job')")
            await page.wait_for_selector(".job .state-stopped", timeout=20_000)
            await shot(page, "15-multistream-stopped")

            # Edit the job in the same form (PATCH): the card shows the new name.
            await page.click(".job button:has-text('Edit')")
            await page.fill("#job-form input[name=name]", "Renamed rerun")
            await page.click("#job-submit")
            await page.wait_for_selector(".job h3:has-text('Renamed rerun')")

            # Deleting the job's only target is refused in words naming the job; with a second
            # target, deleting the first takes it out of the job after saying so.
            row = "#targets-table tr:has-text('Local ingest')"
            await page.click(f"{row} button:has-text('Delete')")
            await page.wait_for_selector("#targets-error:has-text('only target of Renamed rerun')")
            await page.fill("#target-form input[name=name]", "Second ingest")
            await page.fill("#target-form input[name=url]", ingest.url)
            await page.fill("#target-form input[name=stream_key]", "live_4243_second")
            await page.click("#target-submit")
            await page.wait_for_selector("#targets-table td:has-text('Second ingest')")
            await page.click(".job button:has-text('Edit')")
            await page.check("#job-targets label:has-text('Second ingest') input")
            await page.click("#job-submit")
            await page.wait_for_selector(".job td:has-text('Second ingest')")
            await page.click(f"{row} button:has-text('Delete')")
            await page.wait_for_selector(row, state="detached")
            assert any("from 1 job (Renamed rerun)" in d for d in DIALOGS), DIALOGS
            await page.wait_for_selector(".job td:has-text('Local ingest')", state="detached")
            assert await page.locator(".job td:has-text('Second ingest')").count() == 1
            await shot(page, "17-multistream-edited")


# ----------------------------------------------------------------------------- demo


@needs_nginx
async def test_demo_mode_is_alive_and_separate(tmp_path: Path) -> None:
    """`streamerhub run --demo`: simulated Twitch, its own database, a banner on every page, the
    visitor signed in as the owner at once, and only on 127.0.0.1 whatever the config says."""
    import asyncio
    import signal
    import subprocess
    import sys
    import time

    from conftest import free_port, kill_postgres_of

    require_chromium()
    data, port = tmp_path / "data", free_port()
    (tmp_path / "config.toml").write_text('[web]\nhost = "0.0.0.0"\n')
    log = tmp_path / "demo.log"
    ingest = NginxRtmp(tmp_path / "nginx", keys=None, record=False)  # the "local RTMP server"
    await ingest.start()
    env = {
        **os.environ,
        "STREAMERHUB_WEB_PORT": str(port),
        "STREAMERHUB_LOG_FORMAT": "json",
        "STREAMERHUB_DEMO_INGEST_URL": ingest.url,
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamerhub",
                "run",
                "--demo",
                "--config",
                str(tmp_path / "config.toml"),
                "--data-dir",
                str(data),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while '"ready"' not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        assert not (data / "postgres").exists(), "demo data must not touch the real database"
        assert (data / "demo" / "listen").read_text().strip() == f"http://127.0.0.1:{port}"
        assert "/setup/" not in log.read_text(), "the demo asked for a password"
        async with chromium() as browser:
            page = await new_page(browser)
            await page.goto(f"http://127.0.0.1:{port}/")  # no setup, no sign-in: the owner
            assert "Demo mode" in await page.inner_text(".demo-banner")
            await page.wait_for_selector("#feed-status.live")
            # The simulated show: the stream goes live, then follows and subs arrive.
            await page.wait_for_selector("#feed li.ev-follows", timeout=30_000)
            await shot(page, "16-demo-overview")
            # Weeks of past streams of hours, with viewers, on the Streams page.
            await page.goto(f"http://127.0.0.1:{port}/streams")
            rows = await page.locator("#streams-table tbody tr").count()
            assert rows >= 12, await page.inner_text("#streams-table")
            assert "h" in await page.inner_text(
                "#streams-table tbody tr:nth-child(2) td:nth-child(3)"
            )
            await shot(page, "17-demo-streams")
            # The sample clip pushed to the local RTMP server by a running job.
            await page.goto(f"http://127.0.0.1:{port}/multistream")
            await page.wait_for_selector(".job .targets-live .state-live", timeout=60_000)
            assert await ingest.publishing() == ["demo-stream-key"]
            await shot(page, "18-demo-multistream")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)  # with a live feed open: still a prompt, clean stop
            assert proc.wait(30) == 0
            assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        kill_postgres_of(data / "demo")
        await ingest.stop()


def test_the_browser_is_found_by_path_name_or_setting(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    snap = bin_dir / "chromium-browser"  # Ubuntu's name for the snap
    snap.write_text("#!/bin/sh\n")
    snap.chmod(0o755)
    empty = {"PATH": str(tmp_path / "none"), "PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "pw")}
    assert find_browser({**empty, "PATH": str(bin_dir)}) == str(snap)
    assert find_browser({**empty, BROWSER_ENV: str(snap)}) == str(snap)
    assert find_browser({**empty, BROWSER_ENV: str(tmp_path / "missing")}) is None
    assert find_browser(empty) is None
    downloaded = tmp_path / "pw" / "chromium-1200" / "chrome-linux" / "chrome"
    downloaded.parent.mkdir(parents=True)
    downloaded.write_text("")
    assert find_browser(empty) == str(downloaded)
