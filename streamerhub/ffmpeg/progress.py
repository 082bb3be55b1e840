"""Reading FFmpeg's output: `-progress` key=value blocks, and what its stderr says went wrong."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class Progress:
    """One `-progress` block; None where FFmpeg said N/A (or has not said yet)."""

    frame: int | None = None
    fps: float | None = None
    bitrate_kbps: float | None = None
    total_size: int | None = None
    out_time_us: int | None = None
    speed: float | None = None
    dup_frames: int = 0
    drop_frames: int = 0
    ended: bool = False  # progress=end: FFmpeg is finishing

    @property
    def out_time(self) -> float | None:
        """Seconds of media written so far."""
        return None if self.out_time_us is None else self.out_time_us / 1_000_000


@dataclass
class ProgressParser:
    """Incremental parser: feed it lines as they arrive, get a Progress at the end of a block."""

    last: Progress | None = None
    _block: dict[str, str] = field(default_factory=dict)

    def feed(self, line: str) -> Progress | None:
        """Take one line; return the finished block when this line was `progress=…`."""
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        key, value = key.strip(), value.strip()
        if key != "progress":
            self._block[key] = value
            return None
        self.last = parse_block(self._block, ended=value == "end")
        self._block = {}
        return self.last


def parse_block(block: dict[str, str], *, ended: bool = False) -> Progress:
    """Turn one block's key=value pairs into a Progress."""
    return Progress(
        frame=_int(block.get("frame")),
        fps=_float(block.get("fps")),
        bitrate_kbps=_float(block.get("bitrate", "").removesuffix("kbits/s")),
        total_size=_int(block.get("total_size")),
        out_time_us=_out_time_us(block),
        speed=_float(block.get("speed", "").removesuffix("x")),
        dup_frames=_int(block.get("dup_frames")) or 0,
        drop_frames=_int(block.get("drop_frames")) or 0,
        ended=ended,
    )


def _out_time_us(block: dict[str, str]) -> int | None:
    # out_time_ms is microseconds too (a historical FFmpeg misnomer); out_time is HH:MM:SS.us.
    for key in ("out_time_us", "out_time_ms"):
        value = _int(block.get(key))
        if value is not None:
            return value if value >= 0 else None
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", block.get("out_time", ""))
    if match:
        h, m, s = match.groups()
        return round((int(h) * 3600 + int(m) * 60 + float(s)) * 1_000_000)
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text and text.strip() else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) or math.isinf(value) else value


# ------------------------------------------------------------------------- stderr failures


class FailureClass(str, Enum):
    """Why a run ended badly; decides how long to wait before trying again."""

    KEY_REJECTED = "key_rejected"
    CONNECTION_REFUSED = "connection_refused"
    DNS = "dns"
    TLS = "tls"
    TIMEOUT = "timeout"
    INPUT_ERROR = "input_error"
    OTHER = "other"


# First match wins, in this order: a refusal by the server says more than the I/O error that
# follows it, and a DNS failure is reported by FFmpeg as a generic "Input/output error".
_FAILURE_PATTERNS: tuple[tuple[FailureClass, re.Pattern[str]], ...] = (
    # The key is right but something else publishes with it (a key test, another encoder):
    # nginx-rtmp says so as a "Server error"; it passes, so it is retried as a transient.
    (FailureClass.OTHER, re.compile(r"Already publishing", re.I)),
    (
        FailureClass.KEY_REJECTED,
        re.compile(
            r"Server error|Publish\.BadName|NetStream\.Publish\.(?:Rejected|Denied)|"
            r"Authentication failed|unauthori[sz]ed|forbidden",
            re.I,
        ),
    ),
    (
        FailureClass.DNS,
        re.compile(
            r"Failed to resolve|Name or service not known|name resolution|"
            r"No address associated with hostname|Name does not resolve|nodename nor servname",
            re.I,
        ),
    ),
    (
        FailureClass.TLS,
        re.compile(
            r"\b(?:TLS|SSL|OpenSSL|GnuTLS)\b.*(?:fail|error|alert)|certificate|"
            r"error:[0-9A-F]{8}:SSL|wrong version number",
            re.I,
        ),
    ),
    (
        FailureClass.CONNECTION_REFUSED,
        re.compile(r"Connection refused|Network is unreachable|No route to host", re.I),
    ),
    (FailureClass.TIMEOUT, re.compile(r"timed out|ETIMEDOUT", re.I)),
    (
        FailureClass.INPUT_ERROR,
        re.compile(
            r"Error opening input|Invalid data found when processing input|moov atom not found|"
            r"Impossible to open|partial file|No such file or directory",
            re.I,
        ),
    ),
)

# An ingest that refuses a key by closing the connection (nginx-rtmp `on_publish` answering 403,
# and ingests that behave like it) leaves FFmpeg with only a generic error while it opens the
# output, after a completed handshake. A handshake that is reset says so first ("Cannot read
# RTMP handshake response"); a connection that drops while live is a write error, not an open.
_CLOSED_AT_PUBLISH = re.compile(
    r"Error opening output .*: (?:Input/output error|Broken pipe|End of file)", re.I
)
_HANDSHAKE_OR_RESET = re.compile(r"handshake|Connection reset", re.I)

_PREFIX = re.compile(r"^(?:\[[^\]]* @ 0x[0-9a-f]+\] )?(?:\[(\w+)\] )?")
ERROR_LEVELS = frozenset({"error", "fatal", "panic"})


def split_log_line(line: str) -> tuple[str | None, str]:
    """'[rtmp @ 0x55] [error] Server error: x' → ('error', 'Server error: x')."""
    match = _PREFIX.match(line)
    assert match is not None  # the pattern matches the empty string
    return match.group(1), line[match.end() :]


def classify_failure(lines: Iterable[str]) -> FailureClass:
    """Failure class of a run from its stderr (error lines first, then everything)."""
    lines = list(lines)
    errors = [text for level, text in map(split_log_line, lines) if level in ERROR_LEVELS]
    texts = [split_log_line(line)[1] for line in lines]
    for candidates in (errors, texts):
        for failure, pattern in _FAILURE_PATTERNS:
            if any(pattern.search(text) for text in candidates):
                return failure
    closed = any(_CLOSED_AT_PUBLISH.search(text) for text in errors)
    if closed and not any(_HANDSHAKE_OR_RESET.search(text) for text in texts):
        return FailureClass.KEY_REJECTED
    return FailureClass.OTHER


def first_error(lines: Iterable[str]) -> str | None:
    """The first error-level message (the root cause; later ones repeat it), prefix removed."""
    for line in lines:
        level, text = split_log_line(line)
        if level in ERROR_LEVELS and text.strip():
            return text.strip()
    return None
