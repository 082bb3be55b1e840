"""sd_notify without libsystemd: READY=1, STOPPING=1, WATCHDOG=1, STATUS= and
EXTEND_TIMEOUT_USEC= over $NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import AsyncIterator, Mapping


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification to systemd; False (and no error) when not run by systemd."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None when not asked for."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2


EXTEND_EVERY = 20.0  # seconds between requests for more start-up time


@contextlib.asynccontextmanager
async def starting(status: str, every: float = EXTEND_EVERY) -> AsyncIterator[None]:
    """A start-up step that may outlast TimeoutStartSec= (90 s by default): a backup and the
    migrations that backfill a big history take minutes. Meanwhile `systemctl status` shows
    what it is (STATUS=) and systemd is asked for more time, a step at a time
    (EXTEND_TIMEOUT_USEC=, systemd 236 and later), so a start still at work is not killed and
    restarted into the same work again. The requests come from the event loop: a daemon that
    dies or hangs stops asking, and the timeout applies again."""
    if not os.environ.get("NOTIFY_SOCKET"):
        yield
        return

    async def extend() -> None:
        while True:
            notify(f"EXTEND_TIMEOUT_USEC={int(3 * every * 1_000_000)}")
            await asyncio.sleep(every)

    notify(f"STATUS={status}")
    task = asyncio.create_task(extend())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
