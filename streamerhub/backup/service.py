"""Taking a backup (dump, verify, keep, prune), the daily schedule, and the health the
dashboard shows."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from streamerhub.backup.archive import (
    Backup,
    Retention,
    file_name,
    folder_of,
    list_backups,
    prune,
)
from streamerhub.backup.tools import BackupError, PgTools, dump, find_tools, restore
from streamerhub.clock import Clock, StreamerClock
from streamerhub.config import Settings
from streamerhub.db import Database, create_pool
from streamerhub.log import get_logger

log = get_logger(__name__)

UTC = dt.timezone.utc
STALE_AFTER = dt.timedelta(days=2)  # the dashboard warns past this
CATCH_UP_DELAY_S = 600.0  # a missed daily backup runs this long after start, not during it

TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY 1"""


async def count_rows(conn: Any) -> dict[str, int]:
    """Rows of every table of the schema, as the connection's snapshot sees them."""
    counts = {}
    for row in await conn.fetch(TABLES):
        name = row["relname"]
        counts[name] = int(await conn.fetchval(f'SELECT count(*) FROM "{name}"'))
    return counts


def database_url(url: str, name: str) -> str:
    """The same server's URL for another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def server_major(db: Database) -> int:
    return int(await db.pool.fetchval("SHOW server_version_num")) // 10000


@dataclass
class Failure:
    at: dt.datetime
    message: str


class BackupService:
    """Backups of one database into the configured folder; one at a time."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        embedded: bool,
        clock: StreamerClock | None = None,
    ) -> None:
        self.settings = settings
        # `[backup] schedule` is a time of day in the streamer's zone: the daemon's clock (app.py),
        # which follows Settings, else config.toml's.
        self.clock = clock or StreamerClock.from_settings(settings)
        self.clock.listeners.append(self._on_clock)
        self._replan = asyncio.Event()
        self.db = db
        self.embedded = embedded
        self.folder = folder_of(settings)
        self.last_failure: Failure | None = None
        self._lock = asyncio.Lock()
        self._tools: PgTools | None = None
        self._task: asyncio.Task[Backup | None] | None = None

    @property
    def running(self) -> bool:
        return self._lock.locked()

    async def tools(self) -> PgTools:
        if self._tools is None:
            # The server's own major version when this machine has it (always, for the embedded
            # cluster), else a client at least as new: a newer pg_dump writes SQL an older server
            # cannot restore (e.g. SET transaction_timeout on PostgreSQL 16).
            self._tools = find_tools(await server_major(self.db))
        return self._tools

    # ------------------------------------------------------------------ taking one

    async def take(self, kind: str) -> Backup:
        """Dump, verify by restoring into a scratch database, keep, prune; BackupError if not."""
        async with self._lock:
            started = time.monotonic()
            try:
                backup = await self._take(kind)
            except BackupError as exc:
                self.last_failure = Failure(dt.datetime.now(UTC), str(exc))
                log.error("backup_failed", kind=kind, folder=str(self.folder), error=str(exc))
                raise
            backup.duration_s = round(time.monotonic() - started, 2)
            try:
                backup.write_manifest()
                removed = prune(self.folder, Retention.from_settings(self.settings))
            except OSError as exc:
                self.last_failure = Failure(
                    dt.datetime.now(UTC), self._disk_message(exc.strerror or str(exc))
                )
                log.error("backup_failed", kind=kind, error=self.last_failure.message)
                raise BackupError(self.last_failure.message) from None
            self.last_failure = None
            log.info(
                "backup_done",
                file=str(backup.path),
                kind=kind,
                size=backup.size,
                rows=backup.total_rows,
                duration_s=backup.duration_s,
                pruned=len(removed),
            )
            return backup

    async def _take(self, kind: str) -> Backup:
        self._prepare_folder()
        created = dt.datetime.now(UTC)
        final = self.folder / file_name(created, kind)
        part = final.with_name(final.name + ".part")
        try:
            tools = await self.tools()
            rows, version = await self._dump(tools, part)
            restored = await self._verify(tools, part)
            _compare(rows, restored, final)
            os.replace(part, final)
            backup = Backup(final, created, kind, final.stat().st_size, rows=rows)
            backup.schema_version = max(await self.db.applied_versions(), default=None)
            backup.server_version = version
            backup.verified_at = dt.datetime.now(UTC)
            return backup
        except OSError as exc:
            raise BackupError(self._disk_message(exc.strerror or str(exc))) from None
        except BackupError as exc:
            if _nearly_full(self.folder):
                raise BackupError(f"{exc}: {self._disk_hint()}") from None
            raise
        finally:
            part.unlink(missing_ok=True)

    def _prepare_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.folder / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise BackupError(
                f"backup folder {self.folder} is not writable ({exc.strerror}): set "
                "[backup] folder to a folder this user can write, or fix its permissions"
            ) from None

    def _disk_message(self, reason: str) -> str:
        return f"could not write a backup into {self.folder} ({reason}): {self._disk_hint()}"

    def _disk_hint(self) -> str:
        return (
            f"free space in {self.folder}, lower [backup] keep_* or set [backup] folder "
            "to a bigger disk"
        )

    async def _dump(self, tools: PgTools, out: Path) -> tuple[dict[str, int], str]:
        """pg_dump of an exported snapshot, and the row counts of that same snapshot."""
        async with self.db.pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                rows = await count_rows(conn)
                version = str(await conn.fetchval("SHOW server_version"))
                # The snapshot lives as long as this transaction: pg_dump must attach first.
                await dump(tools, self.db.url, out, snapshot)
        return rows, version

    async def _verify(self, tools: PgTools, path: Path) -> dict[str, int]:
        """Restore into a scratch database of the same server and count its rows."""
        name = f"streamerhub_verify_{secrets.token_hex(4)}"
        await self.db.pool.execute(f'CREATE DATABASE "{name}"')
        try:
            url = database_url(self.db.url, name)
            await restore(tools, url, path)
            scratch = Database(await create_pool(url, 2), url)
            try:
                async with scratch.pool.acquire() as conn:
                    return await count_rows(conn)
            finally:
                await scratch.close()
        finally:
            await self.db.pool.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # ------------------------------------------------------------------ what the dashboard sees

    def backups(self) -> list[Backup]:
        return list_backups(self.folder)

    def last_good(self) -> Backup | None:
        return next((b for b in self.backups() if b.verified), None)

    def banner(self, now: dt.datetime | None = None) -> str | None:
        """A warning when the newest verified backup is older than two days (or there is none
        while a backup failed)."""
        now = now or dt.datetime.now(UTC)
        good = self.last_good()
        failure = f" Last attempt failed: {self.last_failure.message}" if self.last_failure else ""
        if good is None and self.last_failure:
            return f"No backup of the database exists yet.{failure}"
        if good is not None and now - good.created_at > STALE_AFTER:
            age = (now - good.created_at).days
            return f"The last good backup of the database is {age} days old.{failure}"
        return None

    def path_of(self, name: str) -> Path | None:
        """The backup file of that name in the folder (never a path outside it)."""
        return next((b.path for b in self.backups() if b.name == name), None)

    def start(self) -> bool:
        """Take a manual backup in the background; False when one is already running."""
        if self.running or (self._task and not self._task.done()):
            return False
        self._task = asyncio.create_task(self.take_safely("manual"))
        return True

    async def take_safely(self, kind: str) -> Backup | None:
        """A backup that never raises: a failure is logged and shown, the daemon goes on."""
        try:
            return await self.take(kind)
        except BackupError:
            return None  # recorded in last_failure and logged by take()
        except Exception as exc:  # a backup must never take capture down with it (logged)
            self.last_failure = Failure(dt.datetime.now(UTC), f"unexpected error: {exc}")
            log.exception("backup_failed", kind=kind, folder=str(self.folder))
            return None

    # ------------------------------------------------------------------ schedule

    def next_run(self, now: dt.datetime) -> dt.datetime | None:
        """The next daily run: at [backup] schedule in the streamer's zone (the clock in effect);
        soon after start when the last good backup is more than a day old; None when no schedule
        is set."""
        if not self.settings.backup.schedule:
            return None
        zone = self.clock.tz
        hour, minute = map(int, self.settings.backup.schedule.split(":"))
        local = now.astimezone(zone)
        at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if at <= local:
            at = (local + dt.timedelta(days=1)).replace(hour=hour, minute=minute)
        good = self.last_good()
        soon = now + dt.timedelta(seconds=CATCH_UP_DELAY_S)
        if (good is None or now - good.created_at > dt.timedelta(days=1)) and soon < at:
            return soon
        return at.astimezone(UTC)

    async def run_schedule(self) -> None:
        while True:
            now = dt.datetime.now(UTC)
            at = self.next_run(now)
            if at is None:
                return
            log.info("backup_scheduled", at=at.isoformat(), timezone=self.clock.timezone)
            self._replan.clear()
            try:  # a new zone in Settings plans again, in it
                await asyncio.wait_for(self._replan.wait(), max(0.0, (at - now).total_seconds()))
                continue
            except TimeoutError:
                pass
            await self.take_safely("daily")

    def _on_clock(self, _clock: Clock) -> None:
        self._replan.set()


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 16 * 1024**2
    except OSError:
        return False


def _compare(dumped: dict[str, int], restored: dict[str, int], path: Path) -> None:
    for table, count in sorted(dumped.items()):
        if restored.get(table) != count:
            raise BackupError(
                f"the backup {path.name} did not check out: {table} has {count} rows in the "
                f"database but {restored.get(table, 0)} once restored; the file was discarded"
            )


async def backup_before_upgrade(service: BackupService) -> None:
    """A backup before migrations change an existing schema (not on a fresh database)."""
    if await service.db.applied_versions() and await service.db.pending():
        log.info("backup_before_upgrade", folder=str(service.folder))
        await service.take_safely("before-upgrade")
