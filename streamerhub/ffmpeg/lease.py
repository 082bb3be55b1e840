"""Which daemon runs the multistream jobs when several share one database: a lease with fencing.

One row of multistream_leases names the holder and when its lease ends (the database's clock).
The holder renews it every quarter of its length; any daemon takes it once it has lapsed, in
one statement, so two daemons never both win. Fencing is by our own clock: the lease counts as
ours only until half its length after the start of the last renewal that succeeded, so a daemon
cut off from the database stops its FFmpeg children (q → SIGTERM → SIGKILL, at most about
6 s) before the lease lapses for the others. The holder's name is stable for a data directory,
so a daemon restarted after a crash takes its own lease back at once instead of waiting it out.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from streamerhub.db import Database
from streamerhub.log import get_logger

log = get_logger(__name__)

NAME = "multistream"
RENEW_FRACTION = 0.25  # renew every quarter of the lease
FENCE_FRACTION = 0.5  # ours for half the lease after a renewal began: the rest is for stopping


def holder_name(data_dir: Path) -> str:
    """This daemon's name in the lease: its host and data directory (one daemon per data dir)."""
    return f"{socket.gethostname()}:{data_dir.resolve()}"


class Lease:
    """One named lease in multistream_leases, held (or wanted) by this daemon."""

    def __init__(self, db: Database, holder: str, seconds: float, name: str = NAME) -> None:
        self.db, self.holder, self.seconds, self.name = db, holder, seconds, name
        self.generation: int | None = None
        self._ours_until = 0.0  # monotonic: fenced from then on unless renewed

    @property
    def renew_every(self) -> float:
        return self.seconds * RENEW_FRACTION

    def held(self) -> bool:
        """Ours by our own clock (the fence): False once a renewal is overdue."""
        return time.monotonic() < self._ours_until

    def fenced_in(self) -> float:
        """Seconds until the fence closes (≤ 0: closed)."""
        return self._ours_until - time.monotonic()

    async def renew(self) -> bool:
        """Take or renew the lease; False when another daemon's lease is live.

        Raises when the database does not answer within a quarter of the lease."""
        started = time.monotonic()
        generation = await asyncio.wait_for(self._claim(), self.renew_every)
        if generation is None:
            self._ours_until = 0.0
            return False
        if generation != self.generation:
            log.info("multistream_lease_taken", holder=self.holder, generation=generation)
        self.generation = int(generation)
        self._ours_until = started + self.seconds * FENCE_FRACTION
        return True

    def drop(self) -> None:
        """Stop counting the lease as ours now (it may still be in the table until it lapses)."""
        self._ours_until = 0.0

    async def release(self) -> None:
        """Give the lease up at once (a clean stop), so another daemon need not wait it out."""
        self.drop()
        async with self.db.pool.acquire() as conn:
            await conn.execute(RELEASE, self.name, self.holder)

    async def current_holder(self) -> str | None:
        """The daemon holding a live lease, if any."""
        async with self.db.pool.acquire() as conn:
            holder: str | None = await conn.fetchval(HOLDER, self.name)
        return holder

    async def _claim(self) -> int | None:
        async with self.db.pool.acquire() as conn:
            generation: int | None = await conn.fetchval(
                CLAIM, self.name, self.holder, self.seconds
            )
        return generation


CLAIM = """
INSERT INTO multistream_leases (name, holder, lease_until)
     VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
   SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until, updated_at = now(),
       generation = multistream_leases.generation
                    + (multistream_leases.holder <> EXCLUDED.holder)::int
 WHERE multistream_leases.holder = EXCLUDED.holder OR multistream_leases.lease_until < now()
RETURNING generation"""
RELEASE = "UPDATE multistream_leases SET lease_until = now() WHERE name = $1 AND holder = $2"
HOLDER = "SELECT holder FROM multistream_leases WHERE name = $1 AND lease_until > now()"
