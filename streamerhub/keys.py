"""Secrets at rest across tables: re-sealing every *_sealed column (master-key rotation, a
restore under another data dir's key), and whether any is sealed yet."""

from __future__ import annotations

from pathlib import Path

from streamerhub.crypto import Keyring, aad_for, forget_retired, retire_and_replace
from streamerhub.db import Database, sealed_columns
from streamerhub.log import get_logger

log = get_logger(__name__)


async def rotate_master_key(db: Database, data_dir: Path, keyring: Keyring) -> tuple[Keyring, int]:
    """Returns the new keyring and how many secrets were re-sealed.

    The old key is kept in retired-keys/ until every row is re-sealed in one transaction, so a
    crash half-way leaves a database that both keys together still open.
    """
    new = retire_and_replace(data_dir, keyring)
    count = await reseal(db, new)
    forget_retired(data_dir)
    log.info("master_key_rotated", key_id=new.current_id, resealed=count)
    return Keyring(new.current, {}, new.source), count


async def reseal(db: Database, ring: Keyring) -> int:
    """Seal every secret not yet under the ring's current key again under it (opening it with a
    retired key of the ring), in one transaction; returns how many were re-sealed."""
    count = 0
    async with db.pool.acquire() as conn, conn.transaction():
        for table, key, column in await sealed_columns(conn):
            rows = await conn.fetch(
                f'SELECT "{key}" AS id, "{column}" AS blob FROM "{table}" '
                f'WHERE "{column}" IS NOT NULL FOR UPDATE'
            )
            for row in rows:
                if not ring.needs_reseal(row["blob"]):
                    continue
                aad = aad_for(table, row["id"], column)
                blob = ring.seal(ring.open(row["blob"], aad), aad)
                await conn.execute(
                    f'UPDATE "{table}" SET "{column}" = $1 WHERE "{key}" = $2', blob, row["id"]
                )
                count += 1
    return count


async def has_sealed_secrets(db: Database) -> bool:
    """Whether any *_sealed column holds a secret (then a missing master key is an error)."""
    async with db.pool.acquire() as conn:
        for table, _key, column in await sealed_columns(conn):
            sql = f'SELECT EXISTS (SELECT 1 FROM "{table}" WHERE "{column}" IS NOT NULL)'
            if await conn.fetchval(sql):
                return True
    return False
