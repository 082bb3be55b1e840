"""sd_notify: a long start-up step keeps asking systemd for time, and stops asking after."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from streamerhub import systemd


def _received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(256).decode())
        except BlockingIOError:
            return out


async def test_a_long_start_step_says_what_it_is_and_asks_for_time_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TimeoutStartSec= is 90 s by default; upgrading a big history (a backup, then migrations
    that backfill rollups) takes minutes: without EXTEND_TIMEOUT_USEC systemd killed the start and
    Restart= began the same work again, for ever."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        async with systemd.starting("migrating", every=0.05):
            await asyncio.sleep(0.22)
        during = _received(sock)
        await asyncio.sleep(0.15)
        after = _received(sock)
    assert during[0] == "STATUS=migrating"
    extends = [m for m in during if m.startswith("EXTEND_TIMEOUT_USEC=")]
    assert len(extends) >= 4, during
    # each request covers three periods: one late tick on a busy machine is not a kill
    assert all(m == "EXTEND_TIMEOUT_USEC=150000" for m in extends), extends
    assert after == []


async def test_without_systemd_a_start_step_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    async with systemd.starting("migrating", every=0.01):
        await asyncio.sleep(0.03)
    assert not systemd.notify("READY=1")
