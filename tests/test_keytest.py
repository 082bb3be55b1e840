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


@needs_nginx
async def test_a_target_with_its_own_ca_file_is_verified_against_it_and_tested_at_creation(
    nginx: NginxRtmp, db: Database, tmp_path: Path
) -> None:
    """A private-CA rtmps:// ingest: refused by the system CAs, accepted with the target's CA
    file; "test_key" at creation tests the key at once and the answer stays on the target."""
    import asyncio
    import time

    from test_jobs import new_multistream

    from streamerhub.errors import InvalidInput

    ms = new_multistream(tmp_path, [])
    async with ms.running(db, Keyring(os.urandom(32))):
        plain = await ms.targets.create({"name": "p", "url": nginx.tls_url, "stream_key": GOOD})
        assert (await ms.test_target(plain.id))["result"] == "tls_error"

        body = {"name": "c", "url": nginx.tls_url, "stream_key": GOOD, "test_key": True}
        target = await ms.create_target({**body, "ca_file": str(nginx.cert)})
        assert target.to_json()["ca_file"] == str(nginx.cert)
        deadline = time.monotonic() + 30
        while (tested := (await ms.targets.get(target.id)).key_test) is None:
            assert time.monotonic() < deadline, "the key was never tested"
            await asyncio.sleep(0.2)
        assert tested["result"] == "ok" and tested["at"]

        # A new key clears the old answer: it no longer says anything about the target.
        edited = await ms.update_target(target.id, {"stream_key": WRONG})
        assert edited.key_test is None
        # A CA path that is wrong now is a 400 now, not a TLS error at air time.
        with pytest.raises(InvalidInput, match="ca_file: cannot read /nowhere/ca.pem"):
            await ms.update_target(target.id, {"ca_file": "/nowhere/ca.pem"})
        (tmp_path / "not.pem").write_text("hello")
        with pytest.raises(InvalidInput, match="holds no PEM certificate"):
            await ms.update_target(target.id, {"ca_file": str(tmp_path / "not.pem")})
        cleared = await ms.update_target(target.id, {"ca_file": None})
        assert cleared.ca_file is None


@needs_nginx
async def test_a_job_started_right_after_creation_is_not_refused_by_the_key_test(
    nginx: NginxRtmp, db: Database, tmp_path: Path
) -> None:
    """An ingest takes one publisher per key: the automatic test at creation used to hold the
    key when a job started at once, so the job's push was refused as a wrong key (and retried
    minutes later). Now the push stops the test, and a test never runs during a push."""
    import asyncio
    import time

    from media import make_clip
    from test_jobs import new_multistream

    from streamerhub.ffmpeg.status import TargetState

    clip = make_clip(tmp_path / "clip.mp4", seconds=4)
    ms = new_multistream(tmp_path, [])
    async with ms.running(db, Keyring(os.urandom(32))):
        video = await ms.library.import_path({"path": str(clip)})
        deadline = time.monotonic() + 30
        while (await ms.library.get(video.id)).status != "ready":
            assert time.monotonic() < deadline, "the video was never prepared"
            await asyncio.sleep(0.1)
        body = {"name": "n", "url": nginx.url, "stream_key": GOOD}
        target = await ms.create_target({**body, "test_key": True})
        while not nginx.published:  # the test stream is on the key
            assert time.monotonic() < deadline, "the key test never published"
            await asyncio.sleep(0.05)
        job = await ms.create_job({"name": "j", "videos": [video.id], "targets": [target.id]})
        await ms.start_job(job.id)
        while True:
            [shown] = (await ms.job_json(await ms.jobs.get(job.id)))["targets"]
            if shown["state"] == "live":
                break
            assert shown["state"] in ("starting", "stopped"), shown
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.1)
        assert nginx.rejected == []
        tested = (await ms.targets.get(target.id)).key_test
        assert tested is not None and tested["result"] == "in_use"
        assert "a job started pushing" in tested["message"]
        # Asked while the job pushes: no second publisher, an answer in words.
        during = await ms.test_target(target.id)
        assert during["result"] == "in_use" and "is pushing" in during["message"]
        assert nginx.rejected == [] and TargetState.LIVE.value == "live"
        await ms.stop_job(job.id)


@needs_nginx
async def test_a_key_another_encoder_streams_with_is_in_use_not_rejected(
    nginx: NginxRtmp,
) -> None:
    import asyncio

    url = f"{nginx.url}/{GOOD}"
    first = asyncio.create_task(try_publish(ffmpeg_exe(), url, seconds=3))
    while not nginx.published:
        await asyncio.sleep(0.05)
    second = await try_publish(ffmpeg_exe(), url, seconds=1, mask=masker(url, GOOD))
    assert second.result == "in_use" and "already publishing" in second.message
    assert (await first).result == "ok"
