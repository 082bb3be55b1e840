"""The streamer's clock, one for the whole daemon: their time zone and the hour their day starts.

config.toml's `[general] timezone` / `day_start_hour` until the streamer chooses in the browser
(setup, Settings → Time zone and day; stored by web/preferences.py). app.py makes one
`StreamerClock`, loads the stored choice into it as soon as the database is migrated (before the
parts that read times start), and hands it to every part that reads or shows local times: the
multistream job schedules, the daily backup time, exports, the analytics pollers' days and the
dashboard. A change in Settings calls `set`, which tells each part's listener at once: no part
keeps an older zone, and no restart is needed."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from typing import Callable

from streamerhub.config import Settings
from streamerhub.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Clock:
    """A time zone (IANA name) and the hour the streamer's day starts (0–23)."""

    timezone: str
    day_start_hour: int


Listener = Callable[[Clock], None]


class StreamerClock:
    """The clock in effect: config.toml's, or the streamer's choice once one is `set`."""

    def __init__(self, configured: Clock) -> None:
        self.configured = configured
        self.current = configured
        self.chosen = False  # the browser's choice is in effect (not config.toml's)
        self.tz = zoneinfo.ZoneInfo(configured.timezone)
        self.listeners: list[Listener] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamerClock:
        general = settings.general
        return cls(Clock(general.timezone, general.day_start_hour))

    @property
    def timezone(self) -> str:
        return self.current.timezone

    @property
    def day_start_hour(self) -> int:
        return self.current.day_start_hour

    def set(self, clock: Clock | None) -> None:
        """Put the streamer's choice in effect (None: config.toml's) and tell every listener.

        A listener's failure is logged and does not stop the others: the clock has changed."""
        clock_in_effect = clock or self.configured
        self.tz = zoneinfo.ZoneInfo(clock_in_effect.timezone)
        changed = clock_in_effect != self.current
        self.current, self.chosen = clock_in_effect, clock is not None
        if not changed:
            return
        for listener in list(self.listeners):
            try:
                listener(clock_in_effect)
            except Exception:  # one part's bug must not leave the others on the old zone
                log.exception("clock_listener_failed", listener=repr(listener))
