"""Which daemon holds which shard of the conduit: leases in twitch_conduit_shards.

Every daemon renews its own rows every third of the lease and takes free or lapsed ones until it
holds as many as it wants; one claim round at a time across daemons (a transaction-scoped
advisory lock), so two daemons never take the same shard. A daemon that cannot reach the database
keeps reading the sockets it has, but assigns a shard to a new session only while the lease it last
wrote has not run out (`still_held`): by then another daemon may hold it, and must not have it
taken back. Nothing else is fenced on the shard: Twitch sends each notification to one shard, and
the events table's message_id key makes any overlap harmless.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streamerhub.db import Database

CLAIM_LOCK = "streamerhub:conduit:"


@dataclass(frozen=True)
class ShardRow:
    """One shard as the database has it, for status pages."""

    shard_id: int
    daemon_id: str
    session_id: str | None
    status: str
    live: bool  # the lease has not lapsed


class ShardClaims:
    """This daemon's shard leases for one Twitch application's conduit."""

    def __init__(self, db: Database, client_id: str, daemon_id: str, lease_seconds: float) -> None:
        self.db, self.client_id, self.daemon_id = db, client_id, daemon_id
        self.lease_seconds = lease_seconds
        self._held_until: dict[int, float] = {}  # shard -> monotonic end of the lease we wrote

    async def claim(self, want: int) -> list[int]:
        """Renew ours, take free or lapsed shards up to `want`; the ids held now, ascending.

        Ids beyond the conduit's shard count may be returned: the caller grows the conduit."""
        started = time.monotonic()
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(LOCK, CLAIM_LOCK + self.client_id)
            rows = await conn.fetch(ROWS, self.client_id)
            mine = [r["shard_id"] for r in rows if r["daemon_id"] == self.daemon_id]
            busy = {r["shard_id"] for r in rows if r["live"]} | set(mine)
            fresh: list[int] = []
            candidate = 0
            while len(mine) + len(fresh) < want:
                if candidate not in busy:
                    fresh.append(candidate)
                candidate += 1
            held = sorted(mine + fresh)
            await conn.execute(UPSERT, self.client_id, held, self.daemon_id, self.lease_seconds)
        self._held_until = {s: started + self.lease_seconds for s in held}
        return held

    def still_held(self, shard_id: int) -> bool:
        """Whether our last written lease on the shard has not run out (by our own clock)."""
        return time.monotonic() < self._held_until.get(shard_id, 0.0)

    async def take_over(self, shard_id: int, from_daemon: str) -> bool:
        """Take a shard another daemon holds but Twitch says is dead; False if it moved on."""
        async with self.db.pool.acquire() as conn:
            taken = await conn.fetchval(
                TAKE_OVER, self.client_id, shard_id, from_daemon, self.daemon_id, self.lease_seconds
            )
        if taken:
            self._held_until[shard_id] = time.monotonic() + self.lease_seconds
        return bool(taken)

    async def report(self, shard_id: int, session_id: str | None, status: str) -> None:
        """Note the shard's session and status for other daemons' status pages."""
        async with self.db.pool.acquire() as conn:
            await conn.execute(REPORT, self.client_id, shard_id, self.daemon_id, session_id, status)

    async def release(self) -> None:
        """Give every shard up at once (a clean stop), so others need not wait for the lease."""
        self._held_until = {}
        async with self.db.pool.acquire() as conn:
            await conn.execute(RELEASE, self.client_id, self.daemon_id)

    async def rows(self) -> list[ShardRow]:
        """Every shard row of the conduit."""
        async with self.db.pool.acquire() as conn:
            found = await conn.fetch(STATUS, self.client_id)
        return [_row(r) for r in found]

    async def owner(self, shard_id: int) -> str | None:
        """The daemon holding a live lease on the shard, if any."""
        async with self.db.pool.acquire() as conn:
            owner: str | None = await conn.fetchval(OWNER, self.client_id, shard_id)
        return owner


def _row(r: Any) -> ShardRow:
    return ShardRow(r["shard_id"], r["daemon_id"], r["session_id"], r["status"], r["live"])


LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
ROWS = """
SELECT shard_id, daemon_id, lease_until > now() AS live
  FROM twitch_conduit_shards WHERE client_id = $1"""
UPSERT = """
INSERT INTO twitch_conduit_shards (client_id, shard_id, daemon_id, status, lease_until)
SELECT $1, s, $3, 'claimed', now() + make_interval(secs => $4) FROM unnest($2::int[]) AS s
    ON CONFLICT (client_id, shard_id) DO UPDATE
   SET daemon_id = EXCLUDED.daemon_id, lease_until = EXCLUDED.lease_until, updated_at = now(),
       status = CASE WHEN twitch_conduit_shards.daemon_id = EXCLUDED.daemon_id
                     THEN twitch_conduit_shards.status ELSE 'claimed' END"""
TAKE_OVER = """
UPDATE twitch_conduit_shards
   SET daemon_id = $4, lease_until = now() + make_interval(secs => $5), status = 'claimed',
       session_id = NULL, updated_at = now()
 WHERE client_id = $1 AND shard_id = $2 AND daemon_id = $3
RETURNING true"""
REPORT = """
UPDATE twitch_conduit_shards SET session_id = $4, status = $5, updated_at = now()
 WHERE client_id = $1 AND shard_id = $2 AND daemon_id = $3"""
RELEASE = """
UPDATE twitch_conduit_shards SET lease_until = now(), status = 'released', updated_at = now()
 WHERE client_id = $1 AND daemon_id = $2"""
STATUS = """
SELECT shard_id, daemon_id, session_id, status, lease_until > now() AS live
  FROM twitch_conduit_shards WHERE client_id = $1 ORDER BY shard_id"""
OWNER = """
SELECT daemon_id FROM twitch_conduit_shards
 WHERE client_id = $1 AND shard_id = $2 AND lease_until > now()"""
