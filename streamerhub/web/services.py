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


class LinkedAccountFigures(Protocol):
    """A linked Twitch account pushed to in a time window, by Twitch's own figures (what
    Helix reported while our push was live): not the main channel's analytics."""

    @property
    def target(self) -> str: ...  # the target's name
    @property
    def login(self) -> str | None: ...
    @property
    def display_name(self) -> str | None: ...
    @property
    def streams_pushed(self) -> int: ...
    @property
    def hours_on_air(self) -> float: ...  # our push live
    @property
    def hours_confirmed_live(self) -> float: ...  # ... and Twitch listing the account live
    @property
    def peak_viewers(self) -> int | None: ...  # None: Twitch never reported it live
    @property
    def avg_viewers(self) -> float | None: ...


class MultistreamHistory(Protocol):
    """Multistream runs by time: the Streams page marks them on a stream's timeline."""

    async def runs_between(self, start: dt.datetime, end: dt.datetime) -> Sequence[RunSummary]:
        """Runs that overlap [start, end) (a running one counts until now), by start time."""
        ...

    async def linked_between(
        self, start: dt.datetime, end: dt.datetime
    ) -> Sequence[LinkedAccountFigures]:
        """Each linked account pushed to in [start, end), its figures from inside it only."""
        ...
