"""The Chat bot page in a real browser: create a command, trigger it from the fake's chat, see
the reply in the log; and the same page at phone width."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from test_browser import (
    become_owner,
    chromium,
    new_page,
    no_script_errors,  # the autouse fixture: pages ran without script errors
    require_chromium,
    shot,
)
from test_chatbot_e2e import chat, start_daemon

from streamerhub.fake_twitch import FakeTwitch

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
# The innermost elements reaching past the screen's right edge, for the failure message.
WIDER_THAN_SCREEN = """[...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > innerWidth + 2 && !e.closest('.table-scroll'))
  .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right > innerWidth + 2))
  .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)"""


async def reload_until(page: Any, selector: str, tries: int = 40) -> None:
    """The page is server-rendered: reload until the log shows what we wait for."""
    for _ in range(tries):
        if await page.query_selector(selector):
            return
        await page.wait_for_timeout(250)
        await page.reload()
    raise AssertionError(f"never appeared: {selector}")


async def test_create_a_command_trigger_it_and_see_the_reply(daemon_factory, db_url: str) -> None:
    require_chromium()
    async with FakeTwitch() as fake, aiohttp.ClientSession() as http:
        daemon = await start_daemon(daemon_factory, db_url, fake)
        async with chromium() as browser:
            page = await new_page(browser)
            await become_owner(page, daemon)
            await page.click("nav a:has-text('Chat bot')")
            await page.wait_for_selector("#command-form")
            await page.click("#chatbot-on-1000")  # off until turned on
            await page.wait_for_selector("#chatbot-off-1000")
            await page.fill("#command-form input[name=name]", "!welcome")
            await page.fill("#command-form input[name=response]", "Welcome, {user}!")
            await page.fill("#command-form input[name=cooldown_s]", "0")
            await page.click("#command-form button[type=submit]")
            await page.wait_for_selector("#command-table td:has-text('!welcome')")
            # A mistake is said next to the form, in words, and nothing is saved.
            await page.fill("#command-form input[name=name]", "!welcome")
            await page.fill("#command-form input[name=response]", "again")
            await page.click("#command-form button[type=submit]")
            assert "exists already" in await page.inner_text("#chatbot-error")

            await chat(http, fake, "!welcome", user_name="Browser_Fan")
            await reload_until(
                page, "#log-table tr.outcome-sent td:has-text('Welcome, Browser_Fan!')"
            )
            await shot(page, "20-chatbot")

            phone = await browser.new_context(
                viewport={"width": 390, "height": 844},
                storage_state=await page.context.storage_state(),
            )
            small = await phone.new_page()
            await small.goto(f"{daemon.url}/chatbot")
            await small.wait_for_selector("#log-table td:has-text('Welcome, Browser_Fan!')")
            assert await small.is_visible("#command-form button[type=submit]")
            width = await small.evaluate("document.documentElement.scrollWidth")
            wide = await small.evaluate(WIDER_THAN_SCREEN)
            assert width <= 392, f"the page scrolls sideways at phone width ({width} px): {wide}"
            await shot(small, "21-chatbot-phone")
