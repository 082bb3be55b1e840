"""Twitch's clock as the fake's frames tell it: `clock_skew` seconds off the host's.

Twitch stamps every EventSub frame (metadata.message_timestamp) with its own clock; a host whose
clock drifts (no NTP on a Raspberry Pi) disagrees with it. The knob shifts every stamp of every
frame sent, so a test can tell Twitch's time from the reader's.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Iterable, Iterator

from .frames import rfc3339_ns

_STAMP = re.compile(r'"message_timestamp":"([^"]+)"')


def skewed(texts: Iterable[str], skew_s: float) -> Iterator[str]:
    """The frames with their message_timestamp moved by skew_s seconds."""
    shift = int(skew_s * 1e9)

    def move(match: re.Match[str]) -> str:
        at = dt.datetime.fromisoformat(match.group(1))
        ns = int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000 + shift
        return f'"message_timestamp":"{rfc3339_ns(ns)}"'

    for text in texts:
        yield _STAMP.sub(move, text, count=1)
