"""Protocols for what the dashboard reads from other wings through app.py (web/ never imports
bot/ or ffmpeg/): each is implemented there and handed over in `web.context.Services`."""

from __future__ import annotations

import datetime as dt
from typing import Protocol, Sequence


class RunSummary(Protocol):
    """One FFmpeg run of a multistream job to one target."""

    @property
    def job(self) -> str: ...  # the job's name
    @property
    def target(self) -> str: ...  # the target's name
    @property
    def started_at(self) -> dt.datetime: ...
    @property
    def ended_at(self) -> dt.datetime | None: ...  # None: still running
    @property
    def failure_class(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def nth(self) -> int: ...  # 1 for the first run of this job to this target


class MultistreamHistory(Protocol):
    """Multistream runs by time: the Streams page marks them on a stream's timeline."""

    async def runs_between(self, start: dt.datetime, end: dt.datetime) -> Sequence[RunSummary]:
        """Runs that overlap [start, end) (a running one counts until now), by start time."""
        ...
