"""Logs: secrets are masked in structlog and stdlib records alike."""

from __future__ import annotations

import json
import logging

from streamerhub.log import get_logger, redact, register_secret, setup_logging


def test_redact_shapes_and_registered_values() -> None:
    register_secret("hunter2-very-secret")
    text = (
        "key live_123456789_AbCdEf0123 token Bearer abcdefghijklmnop "
        "url ?access_token=xyz123&x=1 pw hunter2-very-secret"
    )
    out = redact(text)
    for secret in (
        "live_123456789_AbCdEf0123",
        "abcdefghijklmnop",
        "xyz123",
        "hunter2-very-secret",
    ):
        assert secret not in out
    assert "access_token=••••" in out and "&x=1" in out


def test_structlog_and_stdlib_both_redacted(capsys) -> None:
    register_secret("sk-000-topsecret")
    setup_logging("info", "json")
    get_logger("t").info("target_added", key="sk-000-topsecret", url="rtmp://x/app/live_1_abcdef")
    logging.getLogger("aiohttp.server").error("failed for %s", "sk-000-topsecret")
    lines = [json.loads(l) for l in capsys.readouterr().err.strip().splitlines()]
    assert lines[0]["event"] == "target_added"
    joined = json.dumps(lines)
    assert "sk-000-topsecret" not in joined and "live_1_abcdef" not in joined
    assert lines[1]["logger"] == "aiohttp.server"
