"""A target's stream key tested before air: a few seconds of a test picture published to it.

The answer is one of ok / key_rejected / unreachable / tls_error / error, with a sentence a
user can act on. Twitch ingests get their documented bandwidth-test mode
(``?bandwidthtest=true`` after the key): Twitch accepts and measures the stream but never puts
it on the channel, so a test never goes public.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from streamerhub.ffmpeg.argv import (
    build_global_args,
    build_progress_args,
    build_tls_args,
    masked_url,
    url_secrets,
)
from streamerhub.ffmpeg.binary import FFmpegBinary, ffmpeg_path, run_ffmpeg, system_ca_file
from streamerhub.ffmpeg.progress import FailureClass, ProgressParser, classify_failure, first_error
from streamerhub.log import MASK, get_logger, redact

log = get_logger(__name__)

TEST_SECONDS = 3.0
TWITCH_HOSTS = ("twitch.tv", "contribute.live-video.net")  # ingests: live.twitch.tv, *.contribute…

_MESSAGES = {
    "ok": "the ingest accepted the key and {seconds:g} s of a test stream",
    "key_rejected": "the ingest refused the stream key: copy it again from the platform's "
    "stream settings (and check the URL's application name)",
    "unreachable": "the ingest could not be reached: check the host and port of the URL "
    "(and that this machine can reach it)",
    "tls_error": "the secure connection failed: check the URL, and set [ffmpeg] ca_file "
    "for an ingest with a private certificate authority",
    "error": "the test stream failed",
    "in_use": "not tested: a job is pushing with this key now (an ingest takes one stream per "
    "key); the job's state says whether the ingest takes it",
    "busy": "not tested: the ingest says something is already publishing with this key (another "
    "encoder, or a job of this daemon); stop it and test again",
    "yielded": "not finished: a job started pushing with this key, so the test gave way "
    "(an ingest takes one stream per key); the job's state says whether the ingest takes it",
}
_RESULTS = {
    FailureClass.KEY_REJECTED: "key_rejected",
    FailureClass.CONNECTION_REFUSED: "unreachable",
    FailureClass.DNS: "unreachable",
    FailureClass.TIMEOUT: "unreachable",
    FailureClass.TLS: "tls_error",
}


@dataclass(frozen=True)
class KeyTest:
    result: str  # ok, key_rejected, unreachable, tls_error, error, in_use
    message: str
    bandwidth_test: bool  # Twitch's mode that never goes public

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "ok": self.result == "ok",
            "message": self.message,
            "bandwidth_test": self.bandwidth_test,
        }


def masker(url: str, key: str) -> Callable[[str], str]:
    """A function hiding this URL's key (and query) in FFmpeg's words."""
    shown, secrets = masked_url(url), url_secrets(url, key)

    def mask(text: str) -> str:
        text = text.replace(url, shown).replace(trial_url(url), shown)
        for secret in secrets:
            text = text.replace(secret, MASK)
        return redact(text)

    return mask


def is_twitch(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in TWITCH_HOSTS)


def trial_url(publish_url: str) -> str:
    """The URL a test publishes to: Twitch's bandwidth-test mode added for Twitch ingests."""
    if not is_twitch(publish_url):
        return publish_url
    parts = urlsplit(publish_url)
    query = "&".join(q for q in (parts.query, "bandwidthtest=true") if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def build_trial_argv(ffmpeg: str, url: str, seconds: float, ca_file: str | None) -> list[str]:
    """A small test picture and silence, encoded on the fly, published for `seconds`."""
    return [
        *build_global_args(ffmpeg),
        "-nostdin",
        "-re",
        *("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"),
        *("-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"),
        *build_progress_args("pipe:1", 0.5),
        *("-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "main"),
        *("-pix_fmt", "yuv420p", "-g", "60", "-b:v", "500k", "-maxrate", "500k"),
        *("-bufsize", "500k", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"),
        *("-f", "flv", "-rw_timeout", "10000000"),
        *build_tls_args(url, ca_file),
        url,
    ]


async def try_publish(
    ffmpeg: FFmpegBinary | str,
    publish_url: str,
    *,
    mask: Callable[[str], str] = redact,
    seconds: float = TEST_SECONDS,
    ca_file: str | None = None,
) -> KeyTest:
    """Publish a test stream to `publish_url` (ingest URL + key) and say how it went."""
    url = trial_url(publish_url)
    argv = build_trial_argv(ffmpeg_path(ffmpeg), url, seconds, ca_file or system_ca_file())
    try:
        code, out, err = await run_ffmpeg(argv, timeout=seconds + 25)
    except asyncio.TimeoutError:
        return _result("unreachable", "no answer within the time limit", url, seconds)
    parser = ProgressParser()
    for line in out.splitlines():
        parser.feed(line)
    sent = parser.last is not None and (parser.last.out_time or 0) >= seconds * 0.8
    lines = err.splitlines()
    if code == 0 and sent:
        return _result("ok", None, url, seconds)
    said = first_error(lines) or f"FFmpeg exited with code {code}"
    if "already publishing" in err.lower():  # someone else streams with the key right now
        return KeyTest("in_use", _MESSAGES["busy"], is_twitch(url))
    result = _RESULTS.get(classify_failure(lines), "error")
    return _result(result, str(mask(said)), url, seconds)


def _result(result: str, detail: str | None, url: str, seconds: float) -> KeyTest:
    bandwidth_test = is_twitch(url)
    message = _MESSAGES[result].format(seconds=seconds)
    if bandwidth_test and result == "ok":
        message += " (Twitch bandwidth-test mode: nothing went public)"
    return KeyTest(result, message + (f" (FFmpeg: {detail})" if detail else ""), bandwidth_test)


class KeyTests:
    """The key tests in flight, by target, so that a push and a test never hold one key at once.

    An ingest takes one publisher per key and refuses the next ("Already publishing"), which
    looks exactly like a wrong key: a test still running when a job started (the automatic
    test at creation, then Start) made the job's push fail as `key_rejected` and wait minutes.
    A push therefore stops its target's test first (`give_way`), and the test answers in_use.
    """

    def __init__(self) -> None:
        self._running: dict[int, asyncio.Task[KeyTest]] = {}

    async def run(self, target_id: int, test: Coroutine[None, None, KeyTest]) -> KeyTest:
        """Run one target's test; in_use when a push took the key meanwhile."""
        task = asyncio.create_task(test)
        self._running[target_id] = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # our caller is cancelled, not the test
            return in_use(yielded=True)
        finally:
            if self._running.get(target_id) is task:
                del self._running[target_id]

    async def give_way(self, target_id: int) -> None:
        """Stop this target's test (its FFmpeg is killed and gone) before a push starts."""
        task = self._running.get(target_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
            log.info("key_test_gave_way", target=target_id)


def in_use(*, yielded: bool = False) -> KeyTest:
    """The answer when a job pushes with the key: no second publisher is tried."""
    return KeyTest("in_use", _MESSAGES["yielded" if yielded else "in_use"], False)
