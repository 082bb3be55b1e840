"""Which channels this daemon owns when several share one database: PostgreSQL advisory locks.

A session advisory lock lives exactly as long as the connection that took it, so one dedicated
connection holds them all. When that connection dies PostgreSQL has already let the locks go:
`ensure()` notices (asyncpg's termination callback wakes the bot at once; a ping on every sync
catches a connection that silently stopped answering), opens a new connection, ends the old
backend in case it is only unreachable from here, and takes every lock again. A channel whose
lock another daemon took in between is reported lost, so the bot hands it over.

The same connection LISTENs on tokens.CHANNELS_CHANGED: a login or disconnect written by any
process (CLI, dashboard, demo) wakes the bot's sync at once instead of at its next round.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Callable

from streamerhub.bot.tokens import CHANNELS_CHANGED
from streamerhub.db import Database
from streamerhub.log import get_logger

log = get_logger(__name__)

LOCK_SPACE = "streamerhub:eventsub:"  # advisory lock key prefix: one daemon per channel
PING_TIMEOUT = 5.0


class Ownership:
    """The channel locks this daemon holds, on one dedicated connection that also listens."""

    def __init__(self, db: Database, on_change: Callable[[], None]) -> None:
        self.db, self.on_change = db, on_change
        self.held: set[str] = set()
        self._conn: Any = None
        self._backend: tuple[int, Any] | None = None  # (pid, backend_start) of _conn
        self._orphan: tuple[int, Any] | None = None  # the backend of a connection we dropped

    async def ensure(self) -> list[str]:
        """A live connection holding every lock again; returns the channels lost to others."""
        if await self._alive():
            return []
        self._drop_connection()
        conn = await self.db.pool.acquire()
        try:
            lost = await self._adopt(conn)
        except BaseException:
            await self._release(conn)
            raise
        self._conn = conn
        return lost

    async def take(self, channel_id: str) -> bool:
        """Lock the channel for this daemon; False when another daemon owns it."""
        if channel_id in self.held:
            return True
        if not await _try_lock(self._conn, channel_id):
            log.info("twitch_channel_owned_elsewhere", channel_id=channel_id)
            return False
        self.held.add(channel_id)
        return True

    async def release(self, channel_id: str) -> None:
        """Let another daemon have the channel."""
        if channel_id not in self.held:
            return
        self.held.discard(channel_id)
        if self._conn is None:
            return  # the lock went with the connection
        try:
            await self._conn.fetchval(UNLOCK, LOCK_SPACE + channel_id)
        except Exception as exc:  # noqa: BLE001 - the lock went with its dead connection
            log.warning("twitch_channel_unlock_failed", channel_id=channel_id, error=str(exc))

    async def confirm(self, channel_id: str) -> bool:
        """Does our lock connection still hold the channel's lock, asked of the database now?

        WebSocket mode asks before every (re)subscription: a daemon that lost its database may
        have lost the channel with it, and subscribing then would capture it twice. Asked on a
        pool connection (the lock connection may be busy with a sync); False when the database
        does not answer within PING_TIMEOUT."""
        backend = self._backend
        if channel_id not in self.held or backend is None:
            return False
        try:
            held = await asyncio.wait_for(self._holds(backend, channel_id), PING_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - unreachable or broken: not confirmed
            log.warning(
                "twitch_channel_ownership_unconfirmed",
                channel_id=channel_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        return held and channel_id in self.held

    async def _holds(self, backend: tuple[int, Any], channel_id: str) -> bool:
        async with self.db.pool.acquire() as conn:
            return bool(await conn.fetchval(HOLDS_LOCK, *backend, LOCK_SPACE + channel_id))

    def let_go(self) -> None:
        """Give up every lock now without the database (it may be unreachable): the connection
        is dropped, and its backend ended at the next `ensure()` if it outlived us."""
        self._drop_connection()
        self.held.clear()

    async def close(self) -> None:
        """Release every lock and the connection; idempotent."""
        conn, self._conn = self._conn, None
        self.held.clear()
        if conn is not None:
            await self._release(conn)

    async def _alive(self) -> bool:
        if self._conn is None:
            return False
        try:
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), PING_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - whatever broke it, the connection is replaced
            log.warning("twitch_lock_connection_lost", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _drop_connection(self) -> None:
        """Forget a broken connection without waiting on it; its locks go with it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._orphan, self._backend = self._backend, None
        with contextlib.suppress(Exception):  # a proxy whose connection died raises on any call
            conn.remove_termination_listener(self._wake)
            conn.terminate()

    async def _release(self, conn: Any) -> None:
        """Back to the pool, whose reset unlocks all and UNLISTENs, without our callbacks
        (asyncpg warns about a listener left on a released connection)."""
        with contextlib.suppress(Exception):  # a proxy whose connection died is released already
            conn.remove_termination_listener(self._wake)
            await conn.remove_listener(CHANNELS_CHANGED, self._wake)
        await self.db.pool.release(conn)

    async def _adopt(self, conn: Any) -> list[str]:
        """Make `conn` the lock connection: listen, end the old backend, take the locks again."""
        await conn.add_listener(CHANNELS_CHANGED, self._wake)
        backend = (conn.get_server_pid(), await conn.fetchval(BACKEND_START))
        if self._orphan is not None:
            # Unreachable from here is not dead on the server: while that backend lives it keeps
            # our locks, and no daemon, this one included, could take them.
            await conn.fetchval(TERMINATE_BACKEND, *self._orphan)
            self._orphan = None
        lost = [c for c in sorted(self.held) if not await _try_lock(conn, c)]
        if self.held:
            log.warning(
                "twitch_channel_locks_retaken", retaken=len(self.held) - len(lost), lost=lost
            )
        self.held.difference_update(lost)
        conn.add_termination_listener(self._wake)
        self._backend = backend
        return lost

    def _wake(self, *_args: Any) -> None:
        """asyncpg's callback for a NOTIFY or the connection's end: the bot syncs now."""
        self.on_change()


async def _try_lock(conn: Any, channel_id: str) -> bool:
    return bool(await conn.fetchval(TRY_LOCK, LOCK_SPACE + channel_id))


TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"
BACKEND_START = "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
# An advisory lock on a bigint key shows in pg_locks as classid (high half), objid (low half).
HOLDS_LOCK = """
SELECT EXISTS (
  SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
   WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
     AND l.pid = $1 AND a.backend_start = $2
     AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($3, 0))"""
# backend_start guards against a pid the server has handed to a new backend since.
TERMINATE_BACKEND = """
SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
 WHERE pid = $1 AND backend_start = $2"""
