"""GET /ws: the EventSub WebSocket, with Twitch's welcome, keepalive, ping and close rules."""

from __future__ import annotations

import asyncio
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from typing import Literal

from aiohttp import WSMsgType, web

from . import frames
from .clock import skewed
from .keys import STATE_KEY
from .state import Session, State

KEEPALIVE_MIN, KEEPALIVE_MAX = 10, 600
_MAX_SLEEP = 0.5  # how late the ticker may notice a re-enabled keepalive or a queued close
_CHUNK_BYTES = 256 * 1024
_HIGH_WATER = 4 * 1024 * 1024  # transport backlog above which a flood waits for the reader
# What else follows a socket (conduits.py registers its shards here, the socket knows no conduit):
# called after a reconnect's welcome with (state, old, new), at the end with (state, session, code).
ON_MOVED: list[Callable[[State, Session, Session], None]] = []
ON_ENDED: list[Callable[[State, Session, int | None], None]] = []


async def eventsub_ws(request: web.Request) -> web.WebSocketResponse:
    """Serve one EventSub connection from welcome to close."""
    state = request.config_dict[STATE_KEY]
    keepalive = _keepalive_from(request, state)
    # Twitch frames are small and many: skip permessage-deflate, it costs more than it saves.
    ws = web.WebSocketResponse(autoping=False, compress=False, timeout=5.0)
    await ws.prepare(request)
    previous = _reconnect_source(state, request)
    if previous is False:
        await ws.close(code=4007, message=b"invalid reconnect URL")
        return ws
    now = time.monotonic()
    session = Session(
        id="AgoQ" + secrets.token_urlsafe(24),
        ws=ws,
        keepalive=previous.keepalive if previous else keepalive,
        connected_at=frames.rfc3339_ns(),
        transport=request.transport,
        welcomed_at=now,
        last_sent=now,
    )
    state.sessions[session.id] = session
    ticker = None
    try:
        await send(
            state,
            session,
            frames.welcome(session.id, session.connected_at, session.keepalive),
            "session_welcome",
        )
        if previous is not None:
            # Only after the welcome: until then the old socket keeps getting the events.
            state.move_subscriptions(previous, session)
            for moved in ON_MOVED:
                moved(state, previous, session)
        ticker = asyncio.create_task(_tick(state, session))
        await _read(session)
    finally:
        await _stop_ticker(ticker, session)
        state.end_session(session, session.close_code or ws.close_code)
        for ended in ON_ENDED:
            ended(state, session, session.close_code or ws.close_code)
    return ws


async def _stop_ticker(ticker: asyncio.Task[None] | None, session: Session) -> None:
    if ticker is None:
        return
    # A ticker that is itself closing the socket finishes that close handshake first.
    closing_itself = session.closing_task is ticker
    if not closing_itself:
        ticker.cancel()
    await asyncio.wait([ticker])


def _keepalive_from(request: web.Request, state: State) -> float:
    raw = request.query.get("keepalive_timeout_seconds")
    if raw is None:
        return state.settings.keepalive_default
    try:
        return min(KEEPALIVE_MAX, max(KEEPALIVE_MIN, int(raw)))
    except ValueError:
        raise web.HTTPBadRequest(text="keepalive_timeout_seconds must be an integer") from None


def _reconnect_source(state: State, request: web.Request) -> Session | Literal[False] | None:
    """The session a reconnect_url points at; False when the URL is stale or made up."""
    token = request.query.get("reconnect")
    if token is None:
        return None
    old = state.reconnects.pop(token, None)
    return old if old is not None and not old.ws.closed else False


async def _read(session: Session) -> None:
    ws = session.ws
    async for msg in ws:
        if msg.type is WSMsgType.PING:
            await ws.pong(msg.data)
        elif msg.type is WSMsgType.PONG:
            session.ping_sent_at = None
        elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            await close_session(session, 4001, "client sent inbound traffic")
            return


async def send(state: State, session: Session, text: str, kind: str) -> bool:
    """Send one data frame; False when the socket is gone."""
    return await send_many(state, session, (text,), kind) == 1


async def send_many(state: State, session: Session, texts: Iterable[str], kind: str) -> int:
    """Send text frames in order, stopping when the socket goes; returns how many went out.

    Frames are encoded here and written to the transport in chunks: one send_str per frame
    costs a syscall each and caps a flood near 10k frames/s, chunks reach well past 20k.
    Each write holds whole frames, so aiohttp's own pings and close frames never split one.
    """
    if state.settings.clock_skew:
        texts = skewed(texts, state.settings.clock_skew)
    sent, chunk, size = 0, [], 0
    for text in texts:
        frame = text_frame(text.encode())
        chunk.append(frame)
        size += len(frame)
        if size >= _CHUNK_BYTES:
            if not await _write(session, chunk):
                break
            sent, chunk, size = sent + len(chunk), [], 0
    else:
        if chunk and await _write(session, chunk):
            sent += len(chunk)
    if sent:
        session.last_sent = time.monotonic()
        session.frames_sent += sent
        state.counters["frames_sent"] += sent
        state.counters[kind] += sent
    return sent


def text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed RFC 6455 text frame, as a server sends it."""
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", 0x81, length) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


async def _write(session: Session, chunk: list[bytes]) -> bool:
    transport = session.transport
    # ws.closed turns true before aiohttp writes a close frame: nothing may follow that frame.
    if session.ws.closed or transport is None or transport.is_closing():
        return False
    transport.write(b"".join(chunk))
    while transport.get_write_buffer_size() > _HIGH_WATER and not transport.is_closing():
        await asyncio.sleep(0.002)  # a slow reader: wait for the kernel to take the backlog
    return True


async def close_session(session: Session, code: int, reason: str = "") -> None:
    """Close with a Twitch close code, once; safe from any task."""
    if session.close_code is not None or session.ws.closed:
        return
    session.close_code = code
    session.closing_task = asyncio.current_task()
    try:
        await session.ws.close(code=code, message=reason.encode())
    except ConnectionError:
        pass


async def _tick(state: State, session: Session) -> None:
    """Per-socket timers: unused deadline, reconnect grace, keepalives, pings."""
    while not session.ws.closed:
        now = time.monotonic()
        close = _due_close(state, session, now)
        if close is not None:
            await close_session(session, *close)
            return
        if state.keepalive_enabled:
            await _keep_alive(state, session, now)
        else:
            session.ping_sent_at = None  # a stalled server neither pings nor expects pongs
        await asyncio.sleep(_next_wake(state, session, time.monotonic()))


def _due_close(state: State, session: Session, now: float) -> tuple[int, str] | None:
    deadline = state.settings.subscribe_deadline or session.keepalive
    if not session.used and now >= session.welcomed_at + deadline:
        return 4003, "connection unused"
    if session.reconnect_at is not None and (
        now >= session.reconnect_at + state.settings.reconnect_grace
    ):
        return 4004, "reconnect grace time expired"
    if session.ping_sent_at is not None and (
        now >= session.ping_sent_at + state.settings.ping_interval
    ):
        return 4002, "failed ping-pong"
    return None


async def _keep_alive(state: State, session: Session, now: float) -> None:
    if now >= session.last_sent + session.keepalive:
        await send(state, session, frames.keepalive(), "session_keepalive")
    if session.ping_sent_at is None and now >= session.last_ping + state.settings.ping_interval:
        session.ping_sent_at = session.last_ping = now
        try:
            await session.ws.ping()
        except ConnectionError:
            return
        state.counters["pings"] += 1


def _next_wake(state: State, session: Session, now: float) -> float:
    due = [session.last_sent + session.keepalive, session.last_ping + state.settings.ping_interval]
    if not session.used:
        due.append(session.welcomed_at + (state.settings.subscribe_deadline or session.keepalive))
    if session.reconnect_at is not None:
        due.append(session.reconnect_at + state.settings.reconnect_grace)
    if session.ping_sent_at is not None:
        due.append(session.ping_sent_at + state.settings.ping_interval)
    return min(_MAX_SLEEP, max(0.005, min(due) - now))
