"""Library search: the videos matching a name, a format, a duration range and a status.

`GET /api/v1/videos?q=intro&format=mp4&status=ready&min_duration=60&max_duration=3600`; every
parameter is optional and they combine with AND. A bad value is a 400 naming the parameter.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from streamerhub.errors import InvalidInput

STATUSES = ("uploaded", "probing", "preparing", "ready", "rejected")
KNOWN = ("q", "format", "status", "min_duration", "max_duration")


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidInput(f"{name}: a number of seconds, e.g. 60") from None
    if not math.isfinite(seconds) or seconds < 0 or seconds > 10**7:
        raise InvalidInput(f"{name}: between 0 and 10000000 seconds")
    return seconds


def video_filter(query: Mapping[str, str]) -> tuple[str, list[Any]]:
    """(WHERE clause or "", its arguments) for the videos table."""
    unknown = sorted(k for k in query if k not in KNOWN)
    if unknown:
        raise InvalidInput(f"unknown filter {unknown[0]!r} (known: {', '.join(KNOWN)})")
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if q := query.get("q", "").strip():
        if len(q) > 200:
            raise InvalidInput("q: at most 200 characters")
        clauses.append(f"label ILIKE {arg(_like(q))}")
    if fmt := query.get("format", "").strip().lower().lstrip("."):
        if not fmt.isalnum() or len(fmt) > 10:
            raise InvalidInput("format: a file format like mp4, mkv or flv")
        p = arg(fmt)
        clauses.append(
            f"(lower(label) LIKE '%.' || {p} "
            f"OR {p} = ANY(string_to_array(probe->>'container', ',')))"
        )
    if status := query.get("status", "").strip():
        if status not in STATUSES:
            raise InvalidInput(f"status: one of {', '.join(STATUSES)}")
        clauses.append(f"status = {arg(status)}")
    for name, op in (("min_duration", ">="), ("max_duration", "<=")):
        if value := query.get(name, "").strip():
            clauses.append(f"(probe->>'duration')::float8 {op} {arg(_seconds(name, value))}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
