"""`streamerhub backup now | list | restore FILE [--to DATA_DIR]`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from streamerhub.config import Settings, load_settings, prepare_data_dir


def add_backup_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    backup = sub.add_parser("backup", parents=[common], help="database backups")
    actions = backup.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    actions.add_parser(
        "now", parents=[common], help="take a backup now and verify it"
    ).set_defaults(handler=cmd_backup_now)
    actions.add_parser(
        "list", parents=[common], help="backups in the folder, newest first"
    ).set_defaults(handler=cmd_backup_list)
    restore = actions.add_parser(
        "restore", parents=[common], help="restore a backup into an empty (fresh) database"
    )
    restore.add_argument("file", type=Path, help="a .dump file made by `backup now`")
    restore.add_argument(
        "--to",
        metavar="DATA_DIR",
        help="the fresh data dir to restore into (default: the configured one)",
    )
    restore.add_argument(
        "--master-key",
        metavar="FILE",
        type=Path,
        help="the backed-up daemon's master.key: installed, or its secrets re-sealed under "
        "the data dir's own key",
    )
    restore.set_defaults(handler=cmd_backup_restore)


def cmd_backup_now(args: argparse.Namespace, settings: Settings) -> int:
    from streamerhub.backup.service import BackupService
    from streamerhub.db import open_database

    async def take() -> int:
        prepare_data_dir(settings.data_dir)
        async with open_database(settings, own_cluster=False) as db:
            await db.check_not_newer()
            backup = await BackupService(settings, db, not settings.database.url).take("manual")
        print(
            f"{backup.path}: {_size(backup.size)}, {backup.total_rows:,} rows in "
            f"{len(backup.rows)} tables, verified by a restore ({backup.duration_s} s)"
        )
        return 0

    return asyncio.run(take())


def cmd_backup_list(args: argparse.Namespace, settings: Settings) -> int:
    from streamerhub.backup.archive import folder_of, list_backups

    folder = folder_of(settings)
    found = list_backups(folder)
    print(f"{folder}: {len(found)} backup(s)")
    now = dt.datetime.now(dt.timezone.utc)
    for b in found:
        state = "verified" if b.verified else "NOT verified"
        print(
            f"  {b.name}  {b.kind:<14} {_size(b.size):>9}  {_age(now - b.created_at):>8} ago  "
            f"{state}, schema {b.schema_version or '?'}, {b.total_rows:,} rows"
        )
    return 0


def cmd_backup_restore(args: argparse.Namespace, settings: Settings) -> int:
    from streamerhub.backup.restore import restore_backup

    if args.to:
        settings = load_settings(args.config, args.to)
    prepare_data_dir(settings.data_dir)
    done = asyncio.run(restore_backup(settings, args.file.absolute(), args.master_key))
    print(
        f"restored {args.file} into {done.database}: schema {done.schema_version:04d}"
        f"{f' (+{done.migrated} migration(s) applied)' if done.migrated else ''}, "
        f"{sum(done.rows.values()):,} rows in {len(done.rows)} tables"
    )
    if done.key_note:
        print(done.key_note)
    print(f"start it with: streamerhub run --data-dir {settings.data_dir}")
    return 0


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _age(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
