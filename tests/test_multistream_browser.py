"""The multistream page on a phone (390 px), in headless Chromium against `streamerhub run`,
the fake Twitch and a real nginx-rtmp ingest: targets from the platform presets, the key test
made at creation, a private CA file, and several videos dropped at once, each with its own
progress and result."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from media import make_clip
from nginx_rtmp import NginxRtmp, needs_nginx
from test_browser import (
    become_owner,
    chromium,
    daemon_config,
    new_page,
    no_script_errors,
    require_chromium,
    shot,
)

from streamerhub.fake_twitch import FakeTwitch

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.usefixtures("no_script_errors")]
assert no_script_errors  # the autouse fixture of test_browser.py, made active here too

GOOD_KEY = "live_5151_phonetest"
TARGETS = "#target-form"

# Files dropped on the drop zone, built in the page from their bytes as a user's drag would.
DROP = """([zone, files]) => {
  const data = new DataTransfer();
  for (const [name, b64] of files) {
    const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    data.items.add(new File([raw], name, {type: "video/mp4"}));
  }
  document.querySelector(zone).dispatchEvent(
    new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
}"""

# What sticks out of the viewport (the innermost such elements), for the failure message.
WIDER = """() => {
  const limit = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= limit) return [];
  const clipped = (e) => {
    for (let p = e.parentElement; p; p = p.parentElement) {
      if (["auto", "scroll", "hidden"].includes(getComputedStyle(p).overflowX)) return true;
    }
    return false;
  };
  return [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > limit + 0.5 && !clipped(e))
    .filter((e) => ![...e.children].some((c) => c.getBoundingClientRect().right > limit + 0.5))
    .slice(0, 8).map((e) => `${e.tagName}#${e.id}.${e.className}: ${e.getBoundingClientRect().right}`);
}"""


async def add_target(page: Any, name: str, url: str, key: str, ca_file: str = "") -> None:
    await page.fill(f"{TARGETS} input[name=name]", name)
    await page.fill(f"{TARGETS} input[name=url]", url)
    await page.fill(f"{TARGETS} input[name=stream_key]", key)
    await page.fill(f"{TARGETS} input[name=ca_file]", ca_file)
    await page.click("#target-submit")


async def no_sideways_scroll(page: Any) -> None:
    wide = await page.evaluate(WIDER)
    assert not wide, f"the page scrolls sideways on a phone: {wide}"


@needs_nginx
async def test_targets_from_presets_key_test_ca_file_and_dropped_files_on_a_phone(
    daemon_factory: Any, db_url: str, tmp_path: Path
) -> None:
    require_chromium()
    clips = [
        make_clip(tmp_path / f"{name}.mp4", seconds=2, tone=t)
        for name, t in [("one", 440), ("two", 660)]
    ]
    bogus = tmp_path / "holiday.mp4"
    bogus.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a video" * 40)
    async with FakeTwitch() as fake, NginxRtmp(keys={GOOD_KEY}, record=False) as ingest:
        daemon = daemon_factory(daemon_config(db_url, fake)).start()
        async with chromium() as browser:
            page = await new_page(browser, width=390, is_mobile=True, has_touch=True)
            await become_owner(page, daemon)
            await page.goto(f"{daemon.url}/multistream")

            # The platforms are the API's presets; Twitch takes the nearest ingest or a region.
            await page.wait_for_selector("#target-preset option[value=twitch]", state="attached")
            keys = await page.eval_on_selector_all(
                "#target-preset option", "o => o.map(x => x.value)"
            )
            assert keys == ["twitch", "youtube", "kick", "facebook", "custom"], keys
            await page.select_option("#target-preset", "twitch")
            assert await page.is_visible("#target-region")
            assert (
                await page.input_value(f"{TARGETS} input[name=url]") == "rtmp://live.twitch.tv/app"
            )
            assert await page.input_value(f"{TARGETS} input[name=name]") == "Twitch"
            assert "keyframes at most 2 s apart" in await page.inner_text("#target-preset-note")
            await page.fill("#target-region", "fra05")
            url = await page.input_value(f"{TARGETS} input[name=url]")
            assert url == "rtmps://fra05.contribute.live-video.net/app"
            await page.fill("#target-region", "Frankfurt")
            await page.fill(f"{TARGETS} input[name=stream_key]", "live_1_x")
            await page.click("#target-submit")
            await page.wait_for_selector("#target-form-error:has-text('not a Twitch ingest name')")

            # A preset goes to the API as a preset: the server sets the platform's ingest.
            await page.select_option("#target-preset", "youtube")
            assert await page.is_hidden("#target-region")
            await page.fill(f"{TARGETS} input[name=name]", "YouTube main")
            await page.uncheck(f"{TARGETS} input[name=test_key]")
            await page.click("#target-submit")
            row = "#targets-table tr:has-text('YouTube main')"
            await page.wait_for_selector(f"{row} code:has-text('rtmps://a.rtmps.youtube.com')")
            assert await page.locator(f"{row} .key-test").count() == 0  # not tested: not asked

            # Custom URL with the key test chosen at creation: its answer shows on the target.
            assert await page.input_value("#target-preset") == "custom"
            assert await page.is_checked(f"{TARGETS} input[name=test_key]")
            await add_target(page, "Wrong key", ingest.url, "live_5151_typo")
            wrong = "#targets-table tr:has-text('Wrong key')"
            await page.wait_for_selector(
                f"{wrong} .key-test.bad:has-text('key rejected')", timeout=30_000
            )

            # A private CA: a wrong path is refused in words; the right one makes RTMPS work.
            await add_target(page, "Private CA", ingest.tls_url, GOOD_KEY, "/nonexistent/ca.pem")
            await page.wait_for_selector("#target-form-error:has-text('ca_file: cannot read')")
            await page.fill(f"{TARGETS} input[name=ca_file]", str(ingest.cert))
            await page.click("#target-submit")
            private = "#targets-table tr:has-text('Private CA')"
            await page.wait_for_selector(f"{private} .ca-file:has-text('{ingest.cert}')")
            await page.wait_for_selector(f"{private} .key-test.good:has-text('OK')", timeout=30_000)
            assert GOOD_KEY in ingest.published and "live_5151_typo" in ingest.rejected
            await page.click(f"{private} button:has-text('Edit')")
            assert await page.input_value(f"{TARGETS} input[name=ca_file]") == str(ingest.cert)
            await page.click("#target-cancel")

            # Three files dropped at once: each its own row, progress and result.
            files = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in [*clips, bogus]]
            await page.evaluate(DROP, ["#upload-drop", files])
            items = "#upload-list li"
            assert await page.locator(items).count() == 3
            assert await page.locator(f"{items} progress").count() == 3
            for name in ("one.mp4", "two.mp4"):
                item = f"#upload-list li[data-file='{name}']"
                await page.wait_for_selector(f"{item}[data-result=ready]", timeout=40_000)
                assert await page.inner_text(f"{item} .upload-status") == "Ready to stream."
                assert await page.get_attribute(f"{item} progress", "value") == "100"
            bad = "#upload-list li[data-file='holiday.mp4']"
            await page.wait_for_selector(f"{bad}[data-result=rejected]", timeout=40_000)
            assert (await page.inner_text(f"{bad} .upload-status")).startswith("Rejected: ")
            await no_sideways_scroll(page)
            assert GOOD_KEY not in await page.content()
            await shot(page, "19-multistream-phone")
