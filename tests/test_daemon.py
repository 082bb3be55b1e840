"""The daemon as a user runs it: a subprocess on a free port with its own data dir."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from streamerhub.db import _pid_alive, load_migrations, postmaster_pid

pytestmark = pytest.mark.e2e


def _cli(
    *args: str, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamerhub", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd or Path(__file__).parent,
    )


def _psql(url: str, sql: str) -> str:
    """Run SQL on the URL `streamerhub db url` printed, as a user would with psql."""

    async def run() -> str:
        conn = await asyncpg.connect(url)
        try:
            value = await conn.fetchval(sql)
            return "" if value is None else str(value)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_run_health_and_clean_sigterm(daemon_factory) -> None:
    daemon = daemon_factory().start()
    health = daemon.wait_healthy()
    assert health["status"] == "ok" and health["database"]["ok"] is True
    assert health["version"] and health["uptime_s"] >= 0
    ready = [json.loads(l) for l in daemon.log().splitlines() if '"ready"' in l]
    assert ready and ready[0]["url"] == f"http://127.0.0.1:{daemon.port}/"
    pg = postmaster_pid(daemon.data_dir / "postgres")
    assert pg and _pid_alive(pg)

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert not _pid_alive(pg), "embedded PostgreSQL left running after SIGTERM"
    assert "embedded_postgres_stopped" in daemon.log()


def test_kill_9_then_restart_keeps_committed_data(daemon_factory) -> None:
    first = daemon_factory().start()
    url = _cli(
        "db", "url", "--config", str(first.config), "--data-dir", str(first.data_dir)
    ).stdout.strip()
    _psql(
        url,
        "INSERT INTO dead_letters (source, reason, raw) VALUES ('test', 'marker', 'before-kill')",
    )
    first.signal(signal.SIGKILL)
    first.wait(10)

    second = daemon_factory(data_dir=first.data_dir).start()
    assert second.wait_healthy()["database"]["ok"]
    assert _psql(url, "SELECT raw FROM dead_letters WHERE reason = 'marker'") == "before-kill"
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0
    assert postmaster_pid(first.data_dir / "postgres") is None


def test_second_daemon_on_same_data_dir_refused(daemon_factory) -> None:
    first = daemon_factory().start()
    second = daemon_factory(data_dir=first.data_dir).start(wait=False)
    assert second.wait(60) == 1
    assert "already running with data dir" in second.log()
    assert first.wait_healthy()["status"] == "ok"


def test_port_in_use_names_the_setting(daemon_factory) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = daemon_factory(env={"STREAMERHUB_WEB_PORT": str(port)})
        daemon.port = port
        daemon.start(wait=False)
        assert daemon.wait(60) == 2
    log = daemon.log()
    assert f"web.port = {port}" in log and "Traceback" not in log


def test_unwritable_data_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _cli("run", "--data-dir", str(blocker / "data"))
    assert result.returncode == 2
    assert f"data dir {blocker / 'data'} is not writable" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_and_db_commands(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    check = _cli("check", "--data-dir", data)
    lines = check.stdout.splitlines()
    assert any(l.startswith("ok    database: embedded PostgreSQL") for l in lines), check.stdout
    assert any(l.startswith("ok    ffmpeg:") for l in lines), check.stdout
    assert check.returncode == 0, check.stdout + check.stderr

    status = _cli("db", "status", "--data-dir", data)
    assert "pending  0001_foundation" in status.stdout
    count = len(load_migrations())
    assert (
        _cli("db", "upgrade", "--data-dir", data)
        .stdout.strip()
        .endswith(f"{count} migration(s) applied")
    )
    assert _cli("db", "upgrade", "--data-dir", data).stdout.strip() == "schema is up to date"
    assert "applied  0001_foundation" in _cli("db", "status", "--data-dir", data).stdout
    url = _cli("db", "url", "--data-dir", data).stdout.strip()
    assert url.startswith("postgresql://streamerhub@/streamerhub?host=")
    assert postmaster_pid(Path(data) / "postgres") is None, "CLI left its PostgreSQL running"


def test_check_fails_on_unreachable_database(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "STREAMERHUB_DATABASE_URL": "postgresql://u@127.0.0.1:1/x",
        "STREAMERHUB_DATABASE_CONNECT_TIMEOUT": "1",
        "HOME": str(tmp_path),
    }
    result = _cli("check", "--data-dir", str(tmp_path / "d"), env=env)
    assert result.returncode == 1
    assert "FAIL  database: database postgresql://u@127.0.0.1:1/x unreachable" in result.stdout


def test_database_newer_than_code_refuses_to_start(daemon_factory) -> None:
    first = daemon_factory().start()
    url = _cli("db", "url", "--data-dir", str(first.data_dir)).stdout.strip()
    _psql(url, "INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    first.stop()
    second = daemon_factory(data_dir=first.data_dir).start(wait=False)
    assert second.wait(60) == 1
    assert "newer than this StreamerHub" in second.log()
    assert postmaster_pid(first.data_dir / "postgres") is None


def test_systemd_notifications(daemon_factory, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(sock_path))
        notify.settimeout(30)
        daemon = daemon_factory(env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"})
        daemon.start()
        seen: set[str] = set()
        order: list[str] = []
        while not {"READY=1", "WATCHDOG=1"} <= seen:
            order.append(notify.recv(256).decode())
            seen.add(order[-1])
        # the database step (backup and migrations: minutes on a big history) asks for time
        before_ready = order[: order.index("READY=1")]
        assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in before_ready), order
        assert any(m.startswith("STATUS=starting the database") for m in before_ready), order
        daemon.signal(signal.SIGTERM)
        while "STOPPING=1" not in seen:
            seen.add(notify.recv(256).decode())
        assert daemon.wait(30) == 0


def test_cli_finds_the_daemon_of_a_data_dir_on_any_port(daemon_factory) -> None:
    """The daemon writes where it listens into its data dir; the CLI, given only --data-dir (before
    or after the subcommand), reaches it on its non-default port and prints no log lines."""
    daemon = daemon_factory().start()
    listen = daemon.data_dir / "listen"
    assert listen.read_text().strip() == daemon.url
    data = str(daemon.data_dir)
    before = _cli("--data-dir", data, "jobs", "list")
    after = _cli("jobs", "list", "--data-dir", data)
    for result in (before, after):
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "(none)" and result.stderr == ""
    ready = [json.loads(l) for l in daemon.log().splitlines() if '"ready"' in l]
    assert "in a browser" in ready[0]["next"]
    status = _cli("twitch", "status", "--data-dir", data)  # reads the daemon's capture health
    assert "capture: ok" in status.stdout, status.stdout + status.stderr

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert not listen.exists(), "a stopped daemon left its address behind"
    env = {**os.environ, "STREAMERHUB_WEB_PORT": str(daemon.port)}  # nothing listens there now
    gone = _cli("--data-dir", data, "jobs", "list", env=env)
    assert gone.returncode == 1 and "cannot reach the daemon" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_a_terminal_gets_human_log_lines_with_the_url_and_the_next_step() -> None:
    """On a terminal (and no [log] format set) the daemon logs readable lines, not JSON, and its
    ready line names the URL and what to do next."""
    import pty
    import select
    import shutil
    import tempfile
    import time

    from conftest import OWNER_FILE, TEST_PREFIX, free_port, kill_postgres_of

    folder = Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}daemon-"))
    folder.chmod(0o711)  # as daemon_factory: the cluster stays in the data dir
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "STREAMERHUB_LOG_FORMAT"}
    env["STREAMERHUB_WEB_PORT"] = str(port)
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "streamerhub", "run", "--data-dir", str(folder / "data")]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while "next=" not in (text := _plain(seen)):
            assert proc.poll() is None and time.monotonic() < deadline, text
            if not select.select([leader], [], [], 1.0)[0]:
                continue  # nothing yet: check the deadline again
            try:
                seen += os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines and not any(line.lstrip().startswith("{") for line in lines), text
        ready = next(line for line in lines if "ready" in line)
        assert f"http://127.0.0.1:{port}/" in ready and "in a browser" in ready
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        os.close(leader)
        kill_postgres_of(folder / "data")
        shutil.rmtree(folder, ignore_errors=True)


def _plain(raw: bytes) -> str:
    """Terminal output without its colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", raw.decode(errors="replace"))
