"""The FFmpeg executable: where it is, and how a child of it is started, run and stopped.

Every FFmpeg child of the daemon is started by `spawn()` here, so every child dies with the
daemon (PR_SET_PDEATHSIG) and sits in its own process group (a Ctrl-C in the daemon's terminal
reaches the daemon only, which then stops its children in order).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from streamerhub.errors import StreamerHubError

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class FFmpegNotFound(StreamerHubError):
    """No usable FFmpeg binary: none configured, none on PATH, no bundled one, or it does not
    run."""


@dataclass(frozen=True)
class FFmpegBinary:
    """A located, runnable FFmpeg."""

    path: str
    version: str  # e.g. "n9.0.2-17-g2a571b6068-20260930", the token after "ffmpeg version"
    source: Literal["config", "system", "bundled"]


def find_ffmpeg(configured: str | os.PathLike[str] | None = None) -> FFmpegBinary:
    """Return the configured FFmpeg, else `ffmpeg` on PATH, else imageio-ffmpeg's binary."""
    if configured:
        return FFmpegBinary(str(configured), read_version(configured), "config")
    system = shutil.which("ffmpeg")
    if system:
        return FFmpegBinary(system, read_version(system), "system")
    bundled = _bundled_path()
    if bundled:
        return FFmpegBinary(bundled, read_version(bundled), "bundled")
    raise FFmpegNotFound(
        "no FFmpeg found: install ffmpeg (e.g. apt install ffmpeg), set "
        "[ffmpeg] path in config.toml, or reinstall the imageio-ffmpeg wheel"
    )


def _bundled_path() -> str | None:
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):  # the wheel raises RuntimeError when it has no binary
        return None


def read_version(path: str | os.PathLike[str]) -> str:
    """Run `ffmpeg -version` and return its version token; FFmpegNotFound if it does not run."""
    try:
        done = subprocess.run(
            [str(path), "-hide_banner", "-version"],
            capture_output=True,
            timeout=15,
            check=False,
            stdin=subprocess.DEVNULL,
            env=child_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FFmpegNotFound(
            f"FFmpeg at {path} does not run ({exc}): fix [ffmpeg] path "
            "in config.toml or install ffmpeg"
        ) from exc
    first = done.stdout.decode("utf-8", "replace").partition("\n")[0]
    if done.returncode != 0 or not first.startswith("ffmpeg version "):
        raise FFmpegNotFound(
            f"{path} is not a working FFmpeg (exit code {done.returncode}, said {first[:120]!r})"
        )
    return first.split()[2]


def ffmpeg_path(binary: FFmpegBinary | str | os.PathLike[str]) -> str:
    """Accept an FFmpegBinary or a plain path wherever an FFmpeg is needed."""
    return binary.path if isinstance(binary, FFmpegBinary) else str(binary)


def system_ca_file() -> str | None:
    """The system's CA bundle (Debian's /etc/ssl/certs/ca-certificates.crt), if there is one."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def tls_verification_problem(path: str | os.PathLike[str]) -> str | None:
    """Why this FFmpeg cannot verify an rtmps:// ingest's certificate (None: it can)."""
    try:
        done = subprocess.run(
            [str(path), "-hide_banner", "-h", "protocol=tls"],
            capture_output=True,
            timeout=15,
            check=False,
            stdin=subprocess.DEVNULL,
            env=child_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"FFmpeg at {path} does not run ({exc})"
    text = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    if "tls AVOptions" not in text:
        return "this FFmpeg was built without TLS: rtmps:// targets cannot work"
    if "tls_verify" not in text or "ca_file" not in text:
        return "this FFmpeg cannot verify certificates: rtmps:// would send keys unchecked"
    if system_ca_file() is None:
        return "no system CA bundle found (install ca-certificates or set [ffmpeg] ca_file)"
    return None


# -------------------------------------------------------------------------------- children


def _child_setup(parent_pid: int) -> None:
    # Runs in the child between fork and exec: SIGKILL us when the thread that forked us
    # exits (the daemon's event-loop thread), and give up if the daemon is already gone.
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The daemon's environment without its STREAMERHUB_* settings.

    FFmpeg needs none of them, and a secret there (STREAMERHUB_TWITCH_CLIENT_SECRET, a database
    URL with a password) would be one more copy to leak, through /proc, core dumps or a crash
    reporter, for every child of a daemon that runs for months."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.upper().startswith("STREAMERHUB_")}


async def spawn(
    argv: list[str],
    *,
    stdin: int | None = subprocess.PIPE,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """Start an FFmpeg child that dies with the daemon, in its own process group."""
    parent = os.getpid()
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=lambda: _child_setup(parent),
            process_group=0,
            env=child_env(),
        )
    except OSError as exc:
        raise FFmpegNotFound(f"cannot start {argv[0]}: {exc}") from exc


class StopMethod(str, Enum):
    """What it took to end a child: how polite we could stay."""

    EXITED = "exited"  # it was already gone
    QUIT = "quit"  # `q` on stdin
    SIGTERM = "sigterm"
    SIGKILL = "sigkill"


async def stop_process(
    proc: asyncio.subprocess.Process,
    *,
    quit_wait: float = 3.0,
    term_wait: float = 3.0,
    kill_wait: float = 5.0,
) -> StopMethod:
    """Stop a child: `q` on stdin → wait → SIGTERM → wait → SIGKILL; bounded, idempotent."""
    if proc.returncode is not None:
        return StopMethod.EXITED
    if quit_wait > 0 and _send_quit(proc) and await _exited(proc, quit_wait):
        return StopMethod.QUIT
    if _signal(proc, signal.SIGTERM) and await _exited(proc, term_wait):
        return StopMethod.SIGTERM
    _signal(proc, signal.SIGKILL)
    await _exited(proc, kill_wait)
    return StopMethod.SIGKILL


def _send_quit(proc: asyncio.subprocess.Process) -> bool:
    if proc.stdin is None or proc.stdin.is_closing():
        return False
    try:
        proc.stdin.write(b"q")  # no drain: a wedged child must not wedge us too
    except (BrokenPipeError, ConnectionResetError, RuntimeError):
        return False
    return True


def _signal(proc: asyncio.subprocess.Process, sig: int) -> bool:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        return False
    return proc.returncode is None


async def _exited(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return True


async def run_ffmpeg(argv: list[str], *, timeout: float) -> tuple[int, str, str]:
    """Run a short FFmpeg command to completion; return (exit code, stdout, stderr).

    Raises asyncio.TimeoutError after timeout seconds (the child is stopped first).
    """
    proc = await spawn(argv, stdin=subprocess.DEVNULL)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:  # timeout or cancellation: never leave the child behind
        await stop_process(proc, quit_wait=0, term_wait=1.0)
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def iter_lines(stream: asyncio.StreamReader, max_len: int = 4000) -> AsyncIterator[str]:
    """Decoded lines of a child's pipe, split on \\n or \\r, each cut to max_len characters."""
    pending = b""
    while chunk := await stream.read(65536):
        pending += chunk
        *lines, pending = re.split(rb"\r\n|\r|\n", pending)
        for line in lines:
            yield line[:max_len].decode("utf-8", "replace")
        pending = pending[-max_len * 4 :]  # a line without end must not grow without bound
    if pending:
        yield pending[:max_len].decode("utf-8", "replace")
