"""A job's per-linked-account figures as CSV or JSON: the export next to the job's history.

The figures come from Twitch's own answers while our push was live (ffmpeg/linked.py), so they
live in ffmpeg/'s tables and are exported here, kept apart from the main channel's analytics
(analytics/export.py). The column names are a stable interface: add at the end, never rename.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from typing import Any

from streamerhub.errors import InvalidInput

FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
COLUMNS = (
    "job_id",
    "target_id",
    "target_name",
    "user_id",
    "login",
    "display_name",
    "streams_pushed",
    "hours_on_air",
    "hours_confirmed_live",
    "peak_viewers",
    "avg_viewers",
    "samples",
    "first_live_at_utc",
    "first_live_at_local",
    "last_live_at_utc",
    "last_live_at_local",
)
# A cell a spreadsheet would run as a formula (a target's name is whatever the user typed).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def check_format(fmt: str) -> str:
    """The media type of `fmt`; InvalidInput naming the choices otherwise."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def account_rows(stats: Sequence[dict[str, Any]], tz: dt.tzinfo) -> list[dict[str, Any]]:
    """LinkedStore.job_stats rows → export rows: every instant in UTC and on the wall clock."""
    rows = []
    for stat in stats:
        row = {k: v for k, v in stat.items() if k in COLUMNS}
        for name in ("first_live_at", "last_live_at"):
            instant: dt.datetime | None = stat.get(name)
            row[f"{name}_utc"] = _utc(instant)
            row[f"{name}_local"] = instant.astimezone(tz).isoformat() if instant else None
        rows.append({column: row.get(column) for column in COLUMNS})
    return rows


def render(rows: Sequence[dict[str, Any]], fmt: str) -> bytes:
    """The rows as a CSV file with a header line, or a JSON array of objects."""
    check_format(fmt)
    if fmt == "json":
        return json.dumps(list(rows), ensure_ascii=False, indent=1).encode()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[column]) for column in COLUMNS])
    return out.getvalue().encode()


def _utc(instant: dt.datetime | None) -> str | None:
    if instant is None:
        return None
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
