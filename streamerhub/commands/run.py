"""`streamerhub run`: one daemon per data dir, its port checked before anything starts."""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
from pathlib import Path
from typing import TextIO

from streamerhub.config import Settings
from streamerhub.errors import ConfigError, StreamerHubError

LISTEN_FILE = "listen"


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from streamerhub.app import build_app, on_ready
    from streamerhub.config import prepare_data_dir

    demo = None
    if getattr(args, "demo", False):
        from streamerhub.demo import demo_settings

        settings, demo = demo_settings(settings)
    prepare_data_dir(settings.data_dir)
    host, port = settings.web.host, settings.web.port
    ensure_port_free(host, port)
    lock = acquire_daemon_lock(settings.data_dir)
    ready = on_ready(settings)

    def listening(message: str) -> None:
        write_listen_file(settings.data_dir, client_url(host, port))
        ready(message)

    try:
        app = build_app(settings)
        if demo is not None:
            from streamerhub.demo import add_demo

            add_demo(app, demo)
        web.run_app(
            app,
            host=host,
            port=port,
            print=listening,
            access_log=None,
            shutdown_timeout=10,
            handler_cancellation=True,
        )
    finally:
        (settings.data_dir / LISTEN_FILE).unlink(missing_ok=True)
        lock.close()
    return 0


def client_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches a daemon listening on host:port by (asyncio
    listens on "::" for IPv6 only, so that one is reached at ::1)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def write_listen_file(data_dir: Path, url: str) -> None:
    """DATA_DIR/listen names where the running daemon answers, so the CLI finds one started on
    another port (--data-dir is all it needs); removed when the daemon stops."""
    temporary = data_dir / f"{LISTEN_FILE}.tmp"
    temporary.write_text(url + "\n")
    temporary.replace(data_dir / LISTEN_FILE)  # a reader never sees half a URL


def read_listen_file(data_dir: Path) -> str | None:
    """The URL the daemon of this data dir wrote, or None when none is running (or it never
    wrote one: an older version, or it has not finished starting)."""
    try:
        return (data_dir / LISTEN_FILE).read_text().strip() or None
    except OSError:
        return None


def ensure_port_free(host: str, port: int) -> None:
    """Fail before starting anything when the dashboard port is taken, naming the setting."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"web.port = {port}: cannot listen on {host}:{port} "
                f"({exc.strerror}): stop the program using it or choose another "
                "[web] port / STREAMERHUB_WEB_PORT"
            ) from None


def acquire_daemon_lock(data_dir: Path) -> TextIO:
    """One daemon per data dir: a second one would share (and then stop) the same database."""
    handle = open(data_dir / "streamerhub.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        other = handle.read().strip() or "?"
        handle.close()
        raise StreamerHubError(
            f"another streamerhub (pid {other}) is already running with data "
            f"dir {data_dir}: stop it first or use another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
