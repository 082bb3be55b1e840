"""One EventSub WebSocket session: connect, await the welcome, read every frame, watch keepalives.

The reader runs as its own task from the moment the socket opens and hands each text frame to
the client synchronously: it never awaits anything but the socket. A session with no frame for
keepalive + slack seconds is dead. Closing gracefully sends our close frame and goes on reading
until Twitch echoes it, so frames already in flight are read, not dropped (aiohttp's close()
would discard them).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Any, Callable

import aiohttp

WELCOME_TIMEOUT = 10.0
CLOSE_GRACE = 5.0  # how long the old socket may take to echo our close after a reconnect
FORCE_CLOSE_WAIT = 1.0  # a dead peer does not get to delay the reconnect
MAX_MESSAGE = 16 * 1024 * 1024


class SessionLost(Exception):
    """The connection could not be opened, welcomed or subscribed; retry after a backoff."""


OnText = Callable[["Session", str], None]
OnBad = Callable[[str, str], None]


class Session:
    """One WebSocket with its reader task and the futures the supervisor waits on."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.ws = ws
        self.welcome: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()
        self.reconnect: asyncio.Future[str] = loop.create_future()
        self.last_frame = time.monotonic()
        self.welcomed_at = self.last_frame
        self.session_id = ""
        self.keepalive = 10.0
        self.reader: asyncio.Task[None] | None = None

    def end(self, reason: str) -> None:
        """Mark the session lost (first reason wins) and release a welcome still awaited."""
        if not self.lost.done():
            self.lost.set_result(reason)
        if not self.welcome.done():
            self.welcome.set_result(None)

    @property
    def silent_for(self) -> float:
        return time.monotonic() - self.last_frame

    @property
    def since_welcome(self) -> float:
        return time.monotonic() - self.welcomed_at

    # --------------------------------------------------------------------------- reading
    def start_reading(self, on_text: OnText, on_bad: OnBad, name: str) -> None:
        """Read every frame from now on, in a task of its own."""
        self.reader = asyncio.create_task(self._read(on_text, on_bad), name=name)

    async def _read(self, on_text: OnText, on_bad: OnBad) -> None:
        ws = self.ws
        text_type = aiohttp.WSMsgType.TEXT
        try:
            while True:
                msg = await ws.receive()
                if msg.type is text_type:
                    self.last_frame = time.monotonic()
                    on_text(self, msg.data)
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    self.last_frame = time.monotonic()
                    on_bad("binary frame", msg.data.decode("utf-8", "replace"))
                else:
                    break
            reason = f"closed by Twitch (code {ws.close_code})"
        except Exception as exc:  # noqa: BLE001 - a reader must never die silently
            reason = f"reader failed: {type(exc).__name__}: {exc}"
        self.end(reason)

    def accept_welcome(self, session: dict[str, Any]) -> bool:
        """Take the session_welcome payload; False when one came already or it has no id."""
        if self.welcome.done() or not session.get("id"):
            return False
        self.welcome.set_result(session)
        return True

    def ask_reconnect(self, url: str) -> None:
        """session_reconnect: the supervisor opens `url` next (the first request wins)."""
        if not self.reconnect.done():
            self.reconnect.set_result(url)

    # --------------------------------------------------------------------------- waiting
    async def wait_welcome(self, timeout: float = WELCOME_TIMEOUT) -> None:
        """Wait for session_welcome and take its id and keepalive; SessionLost without one."""
        try:
            session = await asyncio.wait_for(asyncio.shield(self.welcome), timeout)
        except asyncio.TimeoutError:
            session = None
        if session is None:
            why = self.lost.result() if self.lost.done() else f"none within {timeout:g} s"
            raise SessionLost(f"no session_welcome: {why}")
        self.welcomed_at = time.monotonic()
        self.session_id = str(session.get("id") or "")
        self.keepalive = float(session.get("keepalive_timeout_seconds") or 10)

    async def watch(self, slack: float) -> str | None:
        """Until the session is lost or stalls (returns why) or Twitch asks to reconnect (None)."""
        while True:
            deadline = self.keepalive + slack - self.silent_for
            if deadline > 0:
                await asyncio.wait(
                    {self.lost, self.reconnect},
                    timeout=deadline,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if self.lost.done():
                return self.lost.result()
            if self.reconnect.done():
                return None
            if self.silent_for >= self.keepalive + slack:
                return (
                    f"no frame for {self.silent_for:.1f} s (keepalive "
                    f"{self.keepalive:g} s + {slack:g} s slack)"
                )

    async def close(self, force: bool = False) -> None:
        """Close; gracefully = our close frame, then read on until Twitch echoes it."""
        ws = self.ws
        try:
            if not ws.closed and not force:
                await ws.send_frame(struct.pack("!H", 1000), aiohttp.WSMsgType.CLOSE)
                if self.reader is not None:
                    await asyncio.wait_for(asyncio.shield(self.reader), CLOSE_GRACE)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            if self.reader is not None and not self.reader.done():
                self.reader.cancel()
                await asyncio.gather(self.reader, return_exceptions=True)
            self.end("closed by us")
            if not ws.closed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ws.close(), FORCE_CLOSE_WAIT)


async def open_socket(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """The WebSocket to Twitch (no automatic heartbeat: Twitch sends keepalives itself)."""
    try:
        return await http.ws_connect(
            url,
            autoping=True,
            heartbeat=None,
            max_msg_size=MAX_MESSAGE,
            compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_GRACE),
        )
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise SessionLost(
            f"cannot connect to {url.split('?')[0]}: {type(exc).__name__}: {exc}"
        ) from None
