"""`streamerhub export events|sessions|series --from --to --format csv|json [--channel]`."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import date, datetime, timedelta
from typing import Any, AsyncIterator, BinaryIO

from streamerhub.analytics.export import (
    FORMATS, KINDS, ExportError, export_events, export_series, export_sessions,
)
from streamerhub.analytics.periods import BUCKET_SIZES, UTC, Calendar, Period, range_period
from streamerhub.analytics.queries import first_data

FIND_CHANNEL = """
SELECT channel_id FROM twitch_channels WHERE channel_id = $1 OR lower(login) = lower($1)"""
KNOWN_CHANNELS = """
SELECT channel_id FROM twitch_channels
 UNION SELECT DISTINCT channel_id FROM stream_sessions
 UNION SELECT DISTINCT channel_id FROM analytics_event_rollup WHERE res = 86400
 ORDER BY 1"""


def add_export_command(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "export", parents=[common], help="write events, sessions or a time series as CSV/JSON",
        description="Stream an export to stdout. Times are given in UTC and in [general] timezone.")
    parser.add_argument("what", choices=KINDS)
    parser.add_argument("--from", dest="start", metavar="WHEN",
                        help="YYYY-MM-DD (from the start of that day, your time zone) or an ISO "
                             "time (no offset: your time zone); default: the beginning")
    parser.add_argument("--to", dest="end", metavar="WHEN",
                        help="YYYY-MM-DD (that day included) or an ISO time (excluded); "
                             "default: now")
    parser.add_argument("--format", choices=FORMATS, default="csv")
    parser.add_argument("--channel", metavar="ID_OR_LOGIN",
                        help="one channel (default: all; series: the only one)")
    parser.add_argument("--bucket", choices=BUCKET_SIZES,
                        help="series bucket size (default: chosen to fit the range)")
    parser.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace, settings: Any) -> int:
    try:
        return asyncio.run(run_export(args, settings, sys.stdout.buffer))
    except BrokenPipeError:          # `| head`: the reader left, which is fine
        return 0


async def run_export(args: argparse.Namespace, settings: Any, out: BinaryIO,
                     now: datetime | None = None) -> int:
    from streamerhub.app import prepare_data_dir
    from streamerhub.db import open_database

    now = now or datetime.now(UTC)
    cal = Calendar.from_settings(settings)
    start = parse_when(cal, args.start, "--from", end=False) if args.start else None
    end = parse_when(cal, args.end, "--to", end=True) if args.end else now
    prepare_data_dir(settings.data_dir)
    async with open_database(settings, own_cluster=False) as db:
        await db.check_not_newer()
        channel = await resolve_channel(db.pool, args.channel, required=args.what == "series")
        async for chunk in await _chunks(db.pool, cal, args, channel, start, end, now):
            out.write(chunk)
        out.flush()
    return 0


async def _chunks(pool: Any, cal: Calendar, args: argparse.Namespace, channel: str | None,
                  start: datetime | None, end: datetime, now: datetime) -> AsyncIterator[bytes]:
    if args.what == "events":
        return export_events(pool, cal, start or _BEGINNING, end, args.format, channel)
    if args.what == "sessions":
        return export_sessions(pool, cal, start or _BEGINNING, end, args.format, channel, now)
    assert channel is not None
    start = start or await first_data(pool, channel) or end - timedelta(days=1)
    period = range_period(cal, start, max(end, start + timedelta(seconds=1)))
    if args.bucket:
        period = Period(period.kind, period.start, period.end, args.bucket, cal)
    return export_series(pool, channel, period, args.format, now)


_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


def parse_when(cal: Calendar, text: str, flag: str, *, end: bool) -> datetime:
    """A day (the streamer's; as an end, included) or an ISO time (naive: the streamer's zone)."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = date.fromisoformat(text)
        return cal.day_start(day + timedelta(days=1) if end else day)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"{flag} {text!r}: expected a day (2026-03-29) or a time "
                          "(2026-03-29T20:00, 2026-03-29T18:00Z)") from None
    return cal.resolve(when) if when.tzinfo is None else when.astimezone(UTC)


async def resolve_channel(pool: Any, wanted: str | None, *, required: bool) -> str | None:
    """--channel as an id or a login; without it, the only channel there is (if required)."""
    if wanted:
        return await pool.fetchval(FIND_CHANNEL, wanted) or wanted
    if not required:
        return None
    known = [r["channel_id"] for r in await pool.fetch(KNOWN_CHANNELS)]
    if len(known) == 1:
        return known[0]
    if not known:
        raise ExportError("no channel has any data yet: connect one with `streamerhub twitch login`")
    raise ExportError(f"several channels have data ({', '.join(known)}): choose one with --channel")
