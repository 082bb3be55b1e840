"""`streamerhub export events|sessions|series --from --to --format csv|json [--channel]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, AsyncGenerator, BinaryIO, cast

from streamerhub.analytics.export import (
    FORMATS,
    KINDS,
    ExportRequest,
    check_request,
    open_export,
)
from streamerhub.analytics.periods import BUCKET_SIZES, UTC, Calendar
from streamerhub.config import Settings

if TYPE_CHECKING:
    from streamerhub.commands.client import Subcommands


def add_export_command(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "export",
        parents=[common],
        help="write events, sessions or a time series as CSV/JSON",
        description="Stream an export to stdout. Times are given in UTC and in your time zone "
        "(the one chosen in Settings, else [general] timezone).",
    )
    parser.add_argument("what", choices=KINDS)
    parser.add_argument(
        "--from",
        dest="start",
        metavar="WHEN",
        help="YYYY-MM-DD (from the start of that day, your time zone) or an ISO "
        "time (no offset: your time zone); default: the beginning",
    )
    parser.add_argument(
        "--to",
        dest="end",
        metavar="WHEN",
        help="YYYY-MM-DD (that day included) or an ISO time (excluded); default: now",
    )
    parser.add_argument("--format", choices=FORMATS, default="csv")
    parser.add_argument(
        "--channel", metavar="ID_OR_LOGIN", help="one channel (default: all; series: the only one)"
    )
    parser.add_argument(
        "--bucket",
        choices=BUCKET_SIZES,
        help="series bucket size (default: chosen to fit the range)",
    )
    parser.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(run_export(args, settings, sys.stdout.buffer))
    except BrokenPipeError:  # `| head`: the reader left, which is fine
        # Python flushes stdout once more at exit and would print that it could not.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def run_export(
    args: argparse.Namespace, settings: Settings, out: BinaryIO, now: datetime | None = None
) -> int:
    from streamerhub.bot.registry import all_channels
    from streamerhub.config import prepare_data_dir
    from streamerhub.db import open_database
    from streamerhub.web.preferences import in_effect

    request = ExportRequest(args.what, args.format, args.start, args.end, args.channel, args.bucket)
    names = ("--from", "--to")
    # A typo in a date is reported at once, before a database is started or reached.
    check_request(Calendar.from_settings(settings), request, names, now or datetime.now(UTC))
    prepare_data_dir(settings.data_dir)
    async with open_database(settings, own_cluster=False) as db:
        await db.check_not_newer()
        clock = await in_effect(db, settings)  # the zone chosen in Settings, as the daemon's
        chunks = await open_export(
            db.pool,
            Calendar.from_clock(clock),
            lambda: all_channels(db),
            request,
            now,
            names=names,
        )
        # aclosing: a write that fails (the reader of a pipe left) must end the query too, or
        # its cursor keeps a pooled connection and closing the pool waits for it forever.
        async with contextlib.aclosing(cast("AsyncGenerator[bytes, None]", chunks)):
            async for chunk in chunks:
                out.write(chunk)
            out.flush()
    return 0
