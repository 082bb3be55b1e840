"""`streamerhub backup now | list | restore FILE [--to DATA_DIR]`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
from pathlib import Path
from typing import Any

from streamerhub.config import Settings, load_settings, prepare_data_dir

PASSPHRASE_ENV = "STREAMERHUB_KEY_PASSPHRASE"


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
    export = actions.add_parser(
        "export-key",
        parents=[common],
        help="write the master key sealed with a passphrase (scrypt + AES-GCM)",
    )
    export.add_argument(
        "file",
        nargs="?",
        type=Path,
        help="where to write it (default: master-key.sealed in the backup folder)",
    )
    export.set_defaults(handler=cmd_backup_export_key)


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
    key = _read_master_key(args.master_key) if args.master_key else None
    done = asyncio.run(restore_backup(settings, args.file.absolute(), key))
    print(
        f"restored {args.file} into {done.database}: schema {done.schema_version:04d}"
        f"{f' (+{done.migrated} migration(s) applied)' if done.migrated else ''}, "
        f"{sum(done.rows.values()):,} rows in {len(done.rows)} tables"
    )
    if done.key_note:
        print(done.key_note)
    print(f"start it with: streamerhub run --data-dir {settings.data_dir}")
    return 0


def cmd_backup_export_key(args: argparse.Namespace, settings: Settings) -> int:
    from streamerhub.backup.archive import folder_of
    from streamerhub.backup.keyfile import write_sealed_export
    from streamerhub.crypto import load_keyring

    keyring = load_keyring(settings.data_dir, os.environ, create=False)
    path = args.file or folder_of(settings) / "master-key.sealed"
    write_sealed_export(path, keyring.current, _passphrase(confirm=True))
    print(f"master key {keyring.current_id} written to {path}, sealed with your passphrase")
    print("without the passphrase this file is useless: keep the passphrase somewhere else")
    return 0


def _read_master_key(path: Path) -> bytes:
    from streamerhub.backup.keyfile import is_sealed_export, open_master_key
    from streamerhub.crypto import read_key_file

    if is_sealed_export(path):
        return open_master_key(path, _passphrase(confirm=False))
    return read_key_file(path)


def _passphrase(confirm: bool) -> str:
    # For scripts: the environment; else asked on the terminal, never echoed.
    given = os.environ.get(PASSPHRASE_ENV)
    if given:
        return given
    first = getpass.getpass("Passphrase for the master key: ")
    if confirm and getpass.getpass("Same passphrase again: ") != first:
        from streamerhub.backup.tools import BackupError

        raise BackupError("the two passphrases differ: nothing was written")
    return first


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
