"""Keys tested before air: a few seconds published to a real nginx-rtmp ingest, in plain words."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from media import ffmpeg_exe, no_leftover_ffmpeg
from nginx_rtmp import NginxRtmp, needs_nginx

from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.ffmpeg.keytest import masker, trial_url, try_publish
from streamerhub.ffmpeg.targets import output_url

pytestmark = [pytest.mark.ffmpeg, pytest.mark.usefixtures("no_leftover_ffmpeg")]

GOOD = "live_good_key_0123456789"
WRONG = "live_wrong_key_987654321"


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[NginxRtmp]:
    ingest = NginxRtmp(tmp_path / "nginx", keys={GOOD})
    try:
        await ingest.start()
        yield ingest
    finally:
        await ingest.stop()


def test_twitch_ingests_are_tested_in_bandwidth_test_mode() -> None:
    twitch = output_url("rtmp://live.twitch.tv/app", "live_1_abc")
    assert trial_url(twitch) == "rtmp://live.twitch.tv/app/live_1_abc?bandwidthtest=true"
    regional = output_url("rtmps://fra05.contribute.live-video.net/app/", "k")
    assert trial_url(regional).endswith("/app/k?bandwidthtest=true")
    youtube = output_url("rtmp://a.rtmp.youtube.com/live2", "k")
    assert trial_url(youtube) == youtube  # other platforms have no such mode: a plain publish


@needs_nginx
async def test_a_key_test_says_ok_rejected_or_unreachable(nginx: NginxRtmp, db: Database) -> None:
    good = await try_publish(ffmpeg_exe(), f"{nginx.url}/{GOOD}", seconds=1.5)
    assert good.result == "ok" and good.to_json()["ok"] is True
    assert nginx.published == [GOOD]

    url = f"{nginx.url}/{WRONG}"
    wrong = await try_publish(ffmpeg_exe(), url, seconds=1.5, mask=masker(url, WRONG))
    assert wrong.result == "key_rejected" and "refused the stream key" in wrong.message
    assert WRONG not in wrong.message and nginx.rejected == [WRONG]

    await nginx.stop()
    gone = await try_publish(ffmpeg_exe(), f"{nginx.url}/{GOOD}", seconds=1.5)
    assert gone.result == "unreachable" and "could not be reached" in gone.message


@needs_nginx
async def test_the_target_test_uses_the_sealed_key(
    nginx: NginxRtmp, db: Database, tmp_path: Path
) -> None:
    from test_jobs import new_multistream

    store_keyring = Keyring(os.urandom(32))
    ms = new_multistream(tmp_path, [])
    async with ms.running(db, store_keyring):
        target = await ms.targets.create({"name": "n", "url": nginx.url, "stream_key": GOOD})
        checked = await ms.test_target(target.id)
    assert checked["result"] == "ok" and checked["target_id"] == target.id
    assert GOOD not in repr(checked)
