"""Cooldowns and sliding-window rate limits, on an injectable monotonic clock."""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Hashable

Clock = Callable[[], float]

# Twitch's chat limits for the sending account: 20 messages per 30 s in a channel where it is
# neither broadcaster nor moderator (VIPs count as moderators here), 100 per 30 s where it is.
CHAT_WINDOW_S = 30.0
CHAT_LIMIT = {"viewer": 20, "moderator": 100, "broadcaster": 100}
# Twitch drops a message identical to the sender's previous one within 30 s (msg_duplicate).
DUPLICATE_WINDOW_S = 30.0


class Cooldowns:
    """When each key may be used again."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.until: dict[Hashable, float] = {}

    def left(self, key: Hashable) -> float:
        """Seconds until key is free (0 when it is)."""
        return max(0.0, self.until.get(key, 0.0) - self.clock())

    def start(self, key: Hashable, seconds: float) -> None:
        if seconds > 0:
            self.until[key] = self.clock() + seconds


class Window:
    """At most `limit` takes in any `window_s` seconds."""

    def __init__(self, window_s: float, clock: Clock = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self.times: deque[float] = deque()

    def _trim(self) -> float:
        now = self.clock()
        while self.times and now - self.times[0] >= self.window_s:
            self.times.popleft()
        return now

    def wait(self, limit: int) -> float:
        """Seconds until one more take fits under `limit` (0 = now)."""
        self._trim()
        if len(self.times) < limit:
            return 0.0
        return self.times[-limit] + self.window_s - self.clock()

    def take(self, limit: int) -> bool:
        now = self._trim()
        if len(self.times) >= limit:
            return False
        self.times.append(now)
        return True
