"""Stream jobs: a video or an ordered playlist × targets, looped, titled, optionally scheduled.

This module is the data side: the job and the validation of what the API sends. `schedule.py`
does the schedule arithmetic, `jobstore.py` keeps the rows that make the desired state survive
a restart, and `service.py` makes it happen.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Callable

from streamerhub.errors import InvalidInput
from streamerhub.ffmpeg.schedule import (
    Schedule,
    iso,
    parse_schedule,
)
from streamerhub.ffmpeg.targets import check_body

FIELDS = ("name", "videos", "targets", "loop", "title", "category", "tags", "schedule")
REQUIRED = ("name", "videos", "targets")
EDITABLE_WHILE_RUNNING = {"name", "title", "category", "tags", "schedule"}
TAG = re.compile(r"^[^\W_]{1,25}$")  # Twitch: letters and digits, at most 25 characters


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    videos: tuple[int, ...]
    targets: tuple[tuple[int, str], ...]  # (target id, desired state), in id order
    loop: int | None  # plays of the playlist; None = forever
    title: str | None
    category: str | None
    tags: tuple[str, ...]
    schedule: Schedule
    desired: str
    started_at: dt.datetime | None
    stop_deadline: dt.datetime | None
    last_fired_at: dt.datetime | None
    ended_reason: str | None
    created_at: dt.datetime

    @property
    def running(self) -> bool:
        return self.desired == "running"

    def target_desired(self, target_id: int) -> str | None:
        """'running' or 'stopped' for a member target, None for any other."""
        return dict(self.targets).get(target_id)

    def to_json(self, tz: dt.tzinfo, now: dt.datetime) -> dict[str, Any]:
        """The job as the API shows it, without live state."""
        return {
            "id": self.id,
            "name": self.name,
            "videos": list(self.videos),
            "loop": "forever" if self.loop is None else self.loop,
            "title": self.title,
            "category": self.category,
            "tags": list(self.tags),
            "schedule": self.schedule.to_json(tz),
            "desired": self.desired,
            "started_at": iso(self.started_at, tz),
            "stop_deadline": iso(self.stop_deadline, tz),
            "next_start": iso(self.schedule.next_start(now, tz), tz),
            "ended_reason": self.ended_reason,
            "created_at": iso(self.created_at, tz),
        }


def _ids(value: Any, field: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{field}: a non-empty list of ids")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise InvalidInput(f"{field}: ids are whole numbers ≥ 1")
    return tuple(value)


def _loop(value: Any) -> int | None:
    if value in ("forever", None):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput('loop: "forever" or the number of plays (1 = play once)')
    return value


def _text(value: Any, field: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(f"{field}: text of at most {limit} characters")
    return value.strip() or None


def _tags(value: Any) -> tuple[str, ...]:
    if value in (None, []):
        return ()
    if not isinstance(value, list) or len(value) > 10:
        raise InvalidInput("tags: a list of at most 10 tags")
    for tag in value:
        if not isinstance(tag, str) or not TAG.match(tag):
            raise InvalidInput(
                f"tags: {tag!r} is not a Twitch tag (letters and digits only, "
                "at most 25, no spaces)"
            )
    return tuple(dict.fromkeys(value))


def parse_job(body: Any, tz: dt.tzinfo, now: dt.datetime, partial: bool = False) -> dict[str, Any]:
    """Validate a create request (name, videos, targets required) or an edit (any subset)."""
    check_body(body, FIELDS, REQUIRED, partial)
    checks: dict[str, Callable[[Any], Any]] = {
        "name": lambda v: _text(v, "name", 100),
        "videos": lambda v: _ids(v, "videos"),
        "targets": lambda v: tuple(dict.fromkeys(_ids(v, "targets"))),
        "loop": _loop,
        "title": lambda v: _text(v, "title", 140),
        "category": lambda v: _text(v, "category", 200),
        "tags": _tags,
        "schedule": lambda v: parse_schedule(v, tz, now),
    }
    fields = {k: checks[k](v) for k, v in body.items()}
    if "name" in body and not fields["name"]:
        raise InvalidInput("name: give the job a name")
    return fields
