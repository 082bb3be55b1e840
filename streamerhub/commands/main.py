"""The `streamerhub` command: run the daemon, check the setup, manage the database and keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

from streamerhub import __version__
from streamerhub.config import Settings, load_settings
from streamerhub.errors import ConfigError, InvalidInput, StreamerHubError
from streamerhub.log import setup_logging

if TYPE_CHECKING:  # imported lazily at run time: most commands need no database
    from streamerhub.db import Database

Handler = Callable[[argparse.Namespace, Settings], int]


def _add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="config file (default: $STREAMERHUB_CONFIG, ./config.toml, "
        "/etc/streamerhub/config.toml)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="data directory (default: $STATE_DIRECTORY or $XDG_DATA_HOME/streamerhub)",
    )


def _common() -> argparse.ArgumentParser:
    """The global options again for every subcommand, so they may come before or after it.
    SUPPRESS: a subcommand that was not given one keeps what came before it (argparse would
    otherwise overwrite `streamerhub --data-dir X jobs list` with the subcommand's None)."""
    parent = argparse.ArgumentParser(add_help=False)
    _add_global_options(parent, argparse.SUPPRESS)
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamerhub", description=__doc__)
    parser.add_argument("--version", action="version", version=f"streamerhub {__version__}")
    _add_global_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()

    run = sub.add_parser("run", parents=[common], help="run the daemon")
    run.add_argument(
        "--demo",
        action="store_true",
        help="run against a simulated Twitch with a separate demo database "
        "(DATA_DIR/demo): a living dashboard without Twitch credentials",
    )
    from streamerhub.commands.run import cmd_run

    run.set_defaults(handler=cmd_run)
    sub.add_parser(
        "check", parents=[common], help="check config, data dir, database, FFmpeg"
    ).set_defaults(handler=cmd_check)

    db = sub.add_parser("db", parents=[common], help="database schema and URL")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser(
        "status", parents=[common], help="applied and pending migrations"
    ).set_defaults(handler=cmd_db_status)
    db_sub.add_parser("upgrade", parents=[common], help="apply pending migrations").set_defaults(
        handler=cmd_db_upgrade
    )
    db_sub.add_parser(
        "url", parents=[common], help="print the connection URL (for psql)"
    ).set_defaults(handler=cmd_db_url)

    keys = sub.add_parser("keys", parents=[common], help="master key")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_sub.add_parser(
        "rotate", parents=[common], help="re-seal every secret under a new key"
    ).set_defaults(handler=cmd_keys_rotate)

    from streamerhub.commands.client import add_commands

    add_commands(sub, common)

    from streamerhub.commands.twitch import add_twitch_commands

    add_twitch_commands(sub, common)

    from streamerhub.commands.export import add_export_command

    add_export_command(sub, common)

    from streamerhub.commands.backup import add_backup_commands

    add_backup_commands(sub, common)

    fake = sub.add_parser(
        "fake-twitch", help="run the fake Twitch (tests, demo, benchmarks)", add_help=False
    )
    fake.set_defaults(handler=None)
    return parser


# ----------------------------------------------------------------------------- db / keys


def cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    from streamerhub.db import load_migrations, redact_url

    async def status(db: Database) -> int:
        applied = await db.applied_versions()
        print(f"database: {redact_url(db.url)}")
        for m in load_migrations():
            print(f"  {'applied' if m.version in applied else 'pending'}  {m.version:04d}_{m.name}")
        await db.check_not_newer()
        return 0

    return asyncio.run(_with_db(settings, status))


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    async def upgrade(db: Database) -> int:
        done = await db.upgrade()
        for m in done:
            print(f"applied  {m.version:04d}_{m.name}")
        print("schema is up to date" if not done else f"{len(done)} migration(s) applied")
        return 0

    return asyncio.run(_with_db(settings, upgrade))


def cmd_db_url(args: argparse.Namespace, settings: Settings) -> int:
    from streamerhub.db import embedded_url

    print(embedded_url(settings))
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from streamerhub.crypto import load_keyring
    from streamerhub.keys import rotate_master_key

    async def rotate(db: Database) -> int:
        await db.check_not_newer()
        keyring = load_keyring(settings.data_dir, os.environ, create=False)
        new, count = await rotate_master_key(db, settings.data_dir, keyring)
        print(f"master key rotated: new key id {new.current_id}, {count} secret(s) re-sealed")
        return 0

    return asyncio.run(_with_db(settings, rotate))


async def _with_db(settings: Settings, action: Callable[[Database], Awaitable[int]]) -> int:
    from streamerhub.config import prepare_data_dir
    from streamerhub.db import open_database

    prepare_data_dir(settings.data_dir)
    async with open_database(settings, own_cluster=False) as db:
        return await action(db)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from streamerhub.commands.check import run_checks

    return asyncio.run(run_checks(settings))


# ----------------------------------------------------------------------------- entry


def _log_level(args: argparse.Namespace, settings: Settings) -> str:
    """The daemon logs at the configured level; a one-shot command only warns, so its output is
    its answer (on stdout) and not the life story of the PostgreSQL it started on the way."""
    level = settings.log.level
    if args.command == "run" or level == "debug":
        return level
    return "error" if level == "error" else "warning"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Every file and folder the daemon, its tools and its FFmpeg children create is private
    # (0600/0700): spool, videos, logs. What must be shared is opened explicitly.
    os.umask(0o077)
    if argv[:1] == ["fake-twitch"]:
        from streamerhub.fake_twitch.__main__ import main as fake_main

        return fake_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, args.data_dir)
        setup_logging(_log_level(args, settings), settings.log.format)
        handler: Handler = args.handler
        return handler(args, settings)
    except ConfigError as exc:
        print(f"streamerhub: configuration error: {exc}", file=sys.stderr)
        return 2
    except InvalidInput as exc:  # what the user typed (a bad date, range or bucket): usage error
        print(f"streamerhub: error: {exc}", file=sys.stderr)
        return 2
    except StreamerHubError as exc:
        print(f"streamerhub: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
