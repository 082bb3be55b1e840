"""Restoring a backup onto an empty database: the data dir's embedded one or [database] url."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from streamerhub.backup.service import TABLES, count_rows
from streamerhub.backup.tools import BackupError, PgTools, find_tools, restore, schema_versions
from streamerhub.config import Settings
from streamerhub.crypto import (
    KEY_FILE,
    Keyring,
    key_id,
    load_keyring,
    write_key_file,
)
from streamerhub.db import (
    Database,
    EmbeddedPostgres,
    create_pool,
    load_migrations,
    redact_url,
)
from streamerhub.keys import has_sealed_secrets, reseal
from streamerhub.log import get_logger

log = get_logger(__name__)


@dataclass
class Restored:
    """What a restore brought back."""

    database: str
    schema_version: int
    rows: dict[str, int] = field(default_factory=dict)
    migrated: int = 0
    key_note: str = ""


async def check_schema(tools: PgTools, path: Path) -> int:
    """The dump's schema version; BackupError when this StreamerHub cannot run on it."""
    versions = await schema_versions(tools, path)
    if not versions:
        raise BackupError(
            f"{path} holds no StreamerHub schema (no migrations recorded): pick a backup made "
            "by `streamerhub backup now`"
        )
    known = max(m.version for m in load_migrations())
    newest = max(versions)
    if newest > known:
        raise BackupError(
            f"{path.name} comes from a newer StreamerHub (schema {newest:04d}_{versions[newest]}, "
            f"this version knows up to {known:04d}): upgrade StreamerHub, then restore it"
        )
    return newest


async def restore_backup(
    settings: Settings, path: Path, master_key: bytes | None = None
) -> Restored:
    """Restore `path` into the settings' database, which must hold no table yet; then apply
    newer migrations and, with the old master key, make the sealed secrets open again."""
    if not path.is_file():
        raise BackupError(f"backup file {path} not found: `streamerhub backup list` shows them")
    # Refused before anything starts: a dump from a newer StreamerHub, or not ours at all.
    version = await check_schema(find_tools(), path)
    embedded = None if settings.database.url else EmbeddedPostgres(settings.data_dir)
    if embedded is not None:
        await embedded.start()
    try:
        if embedded is not None:
            await embedded.create_database()
        url = embedded.url if embedded else settings.database.url
        db = Database(await create_pool(url, 2), url)
        try:
            done = await _restore_into(db, path, version, embedded is not None)
            done.key_note = await _master_key(db, settings.data_dir, master_key)
        finally:
            await db.close()
    finally:
        if embedded is not None and embedded.started_here:
            await embedded.stop()
    log.info(
        "backup_restored", file=str(path), database=done.database, rows=sum(done.rows.values())
    )
    return done


async def _restore_into(db: Database, path: Path, version: int, embedded: bool) -> Restored:
    # The embedded server runs on the binaries found first; an external one needs a client at
    # least as new as itself.
    major = None if embedded else int(await db.pool.fetchval("SHOW server_version_num")) // 10000
    tools = find_tools(major)
    if await db.pool.fetch(TABLES):
        raise BackupError(
            f"the database {redact_url(db.url)} already holds tables: restore into a "
            "fresh data dir (--to DIR), or an empty database"
        )
    await restore(tools, db.url, path)
    done = Restored(redact_url(db.url), version)
    done.migrated = len(await db.upgrade())
    async with db.pool.acquire() as conn:
        done.rows = await count_rows(conn)
    return done


async def _master_key(db: Database, data_dir: Path, old: bytes | None) -> str:
    """Install the old master key, or re-seal under the data dir's own key."""
    if old is None:
        if await has_sealed_secrets(db):
            return (
                "stream keys and Twitch tokens are sealed with the master key of the backed-up "
                f"daemon: copy its master.key into {data_dir} (or rerun with --master-key FILE)"
            )
        return ""
    target = data_dir / KEY_FILE
    if not target.exists() and not os.environ.get("CREDENTIALS_DIRECTORY"):
        write_key_file(target, old)
        return f"master key {key_id(old).hex()} installed as {target}"
    found = load_keyring(data_dir, os.environ, create=False)
    current = Keyring(found.current, {**found.retired, key_id(old): old}, found.source)
    count = await reseal(db, current)
    return f"{count} secret(s) re-sealed under this data dir's master key {current.current_id}"
