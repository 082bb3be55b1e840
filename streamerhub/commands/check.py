"""`streamerhub check`: one line per check, ok or FAIL with what to do; non-zero on any FAIL."""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from typing import Awaitable, Callable

from streamerhub.config import Settings
from streamerhub.errors import StreamerHubError


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    warn: bool = False

    def line(self) -> str:
        label = "FAIL" if not self.ok else ("WARN" if self.warn else "ok")
        return f"{label:<5} {self.name}: {self.detail}"


def check_config(settings: Settings) -> Result:
    where = str(settings.source) if settings.source else "no config file, defaults and environment"
    return Result("config", True, where)


def check_twitch_client(settings: Settings) -> Result:
    problem = settings.twitch.client_problem()
    if problem:
        return Result("twitch client", True, problem, warn=True)
    return Result("twitch client", True, f"{settings.twitch.client_type} application")


def check_data_dir(settings: Settings) -> Result:
    from streamerhub.config import prepare_data_dir

    prepare_data_dir(settings.data_dir)
    mode = stat.S_IMODE(settings.data_dir.stat().st_mode)
    if mode & 0o007:
        return Result(
            "data dir",
            True,
            f"{settings.data_dir} is open to other users "
            f"({oct(mode)}): chmod 700 {settings.data_dir}",
            warn=True,
        )
    return Result("data dir", True, f"{settings.data_dir} (writable, {oct(mode)})")


def check_master_key(settings: Settings) -> Result:
    from streamerhub.crypto import KEY_FILE, load_keyring

    path = settings.data_dir / KEY_FILE
    if not path.exists() and not os.environ.get("CREDENTIALS_DIRECTORY"):
        return Result("master key", True, f"{path} will be created on first start")
    keyring = load_keyring(settings.data_dir, os.environ, create=False)
    return Result("master key", True, f"{keyring.source} (key id {keyring.current_id})")


async def check_database(settings: Settings) -> Result:
    from streamerhub.db import find_pg_bindir, open_database, redact_url

    where = "embedded" if not settings.database.url else "external"
    if where == "embedded":
        find_pg_bindir()
    async with open_database(settings, own_cluster=False) as db:
        await db.check_not_newer()
        pending = await db.pending()
        version = await db.pool.fetchval("SHOW server_version")
    todo = f", {len(pending)} migration(s) pending (applied at start)" if pending else ""
    return Result("database", True, f"{where} PostgreSQL {version} at {redact_url(db.url)}{todo}")


def check_ffmpeg(settings: Settings) -> Result:
    from streamerhub.ffmpeg.binary import find_ffmpeg, tls_verification_problem

    found = find_ffmpeg(settings.ffmpeg.path or None)
    detail = f"{found.version} ({found.source}: {found.path})"
    problem = tls_verification_problem(found.path)
    if problem:
        return Result("ffmpeg", True, f"{detail}; {problem}", warn=True)
    return Result("ffmpeg", True, detail)


def check_process_privacy(settings: Settings) -> Result:
    # FFmpeg takes the RTMP URL (with the stream key) on its command line; with /proc mounted
    # without hidepid any local user can read it from /proc/<pid>/cmdline.
    try:
        options = next(
            line.split()[3] for line in open("/proc/mounts") if line.split()[1] == "/proc"
        )
    except (OSError, StopIteration, IndexError):
        return Result("process privacy", True, "cannot read /proc/mounts", warn=True)
    if "hidepid=" in options and "hidepid=0" not in options and "hidepid=off" not in options:
        return Result("process privacy", True, "/proc is mounted with hidepid")
    return Result(
        "process privacy",
        True,
        "other local users can read FFmpeg's arguments "
        "(stream keys): run StreamerHub as its own user and mount /proc with "
        "hidepid=invisible (see README, 'Stream keys')",
        warn=True,
    )


def check_dashboard_exposure(settings: Settings) -> Result:
    # The daemon itself speaks plain HTTP: off loopback, passwords and session cookies cross
    # the network readable by anyone on the way unless a TLS proxy is the only way in.
    host = settings.web.host
    where = f"{host}:{settings.web.port}"
    if _is_loopback(host):
        front = f", reached as {settings.web.public_url}" if settings.web.public_url else ""
        return Result("dashboard", True, f"listens on {where} only{front}")
    return Result(
        "dashboard",
        True,
        f"listens on {where} over plain HTTP: anyone on the network can read sign-ins and "
        'sessions. Set [web] host = "127.0.0.1" and put a TLS proxy in front (deploy/Caddyfile '
        "or deploy/nginx.conf, see README 'Reach the dashboard from anywhere')",
        warn=True,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name resolving elsewhere is reachable from elsewhere


async def run_checks(settings: Settings) -> int:
    checks: list[Callable[[Settings], Result | Awaitable[Result]]] = [
        check_config,
        check_twitch_client,
        check_data_dir,
        check_master_key,
        check_database,
        check_ffmpeg,
        check_process_privacy,
        check_dashboard_exposure,
    ]
    failed = 0
    for check in checks:
        name = check.__name__.removeprefix("check_").replace("_", " ")
        try:
            result = check(settings)
            if not isinstance(result, Result):
                result = await result
        except StreamerHubError as exc:
            result = Result(name, False, str(exc))
        failed += not result.ok
        print(result.line(), flush=True)
    return 1 if failed else 0
