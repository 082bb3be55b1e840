"""structlog setup: pretty on a TTY, JSON lines otherwise, secrets redacted everywhere."""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

import structlog

MASK = "••••"

# Shapes of secrets we redact even when nobody registered them: Twitch stream keys
# (live_<digits>_<alnum>), OAuth bearer/OAuth headers and token-ish query parameters.
_PATTERNS = [
    re.compile(r"live_\d+_[A-Za-z0-9]+"),
    re.compile(r"(?i)(bearer|oauth)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|token|code|password)=)[^&\s\"']+"
    ),
]


class _Secrets:
    """The set of literal secrets to mask, shared by every logger of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        if not value or len(value) < 4:
            return  # masking "ab" everywhere would shred ordinary text
        with self._lock:
            if value not in self._values:
                # Longest first, so a secret containing another is masked whole.
                self._values = tuple(sorted({*self._values, value}, key=len, reverse=True))

    def values(self) -> tuple[str, ...]:
        return self._values


_SECRETS = _Secrets()


def register_secret(value: str | None) -> None:
    """Mask this value in every log line, stored FFmpeg output and error message from now on."""
    if value:
        _SECRETS.add(str(value))


def redact(text: str) -> str:
    """Return text with registered secrets and secret-shaped strings masked."""
    for value in _SECRETS.values():
        if value in text:
            text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(_mask_match, text)
    return text


def _mask_match(match: re.Match[str]) -> str:
    if match.re.groups:  # keep the "token=" / "Bearer " prefix so the line stays readable
        prefix = match.group(1)
        return prefix + MASK if prefix.endswith("=") else f"{prefix} {MASK}"
    return MASK


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the one place where secrets are removed from log records."""
    return {k: _redact_value(v) for k, v in event_dict.items()}


def _renderer(fmt: str) -> Any:
    pretty = fmt == "pretty" or (fmt == "auto" and sys.stderr.isatty())
    if pretty:
        return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return structlog.processors.JSONRenderer()


def setup_logging(level: str = "info", fmt: str = "auto") -> None:
    """Route structlog and stdlib loggers (aiohttp, asyncpg) through one redacting pipeline."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(fmt)],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats every request; keep it for debugging only.
    logging.getLogger("aiohttp.access").setLevel(max(root.level, logging.WARNING))


def get_logger(name: str | None = None) -> Any:
    """Return a structlog logger; event names are stable snake_case, context goes in fields."""
    return structlog.get_logger(name)
