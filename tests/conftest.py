"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import asyncpg
import pytest

from streamerhub.config import Settings, load_settings
from streamerhub.db import Database, EmbeddedPostgres, create_pool

TEMPLATE = "streamerhub_template"
TEST_PREFIX = "streamerhub-test-"
OWNER_FILE = "owner.pid"
_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (a CI timeout, a stopped job) should tear down like Ctrl-C does, so session
    # fixtures stop their PostgreSQL instead of leaving it running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def reap_orphans() -> None:
    """Stop servers left by an earlier test run that was killed before its teardown ran."""
    for folder in Path(tempfile.gettempdir()).glob(f"{TEST_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        for pgdata_parent in (folder, folder / "data", folder / "data" / "demo"):
            kill_postgres_of(pgdata_parent)
        shutil.rmtree(folder, ignore_errors=True)
    reap_moved_clusters()


def reap_moved_clusters() -> None:
    """Clusters a root daemon moved out of a data dir under a private folder (see db.py's
    CLUSTER_HOMES) outlive that data dir: drop those whose data dir is gone."""
    from streamerhub.db import CLUSTER_HOMES, HOME_MARK

    for home in CLUSTER_HOMES.glob("*") if CLUSTER_HOMES.is_dir() else ():
        try:
            data_dir = Path((home / HOME_MARK).read_text().strip())
        except OSError:
            continue
        if not data_dir.exists():
            kill_postgres_of(home)
            shutil.rmtree(home, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL, started once for the whole run and stopped even if tests fail.

    Its data dir is outside pytest's basetemp: when tests run as root the server runs as the
    'streamerhub' user, and every new pytest session resets /tmp/pytest-of-root to 0700.
    """
    reap_orphans()
    folder = Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}pg-"))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    cluster = EmbeddedPostgres(folder)
    asyncio.run(cluster.start())
    try:
        asyncio.run(_create_template(cluster))
        yield cluster
    finally:
        asyncio.run(cluster.stop())
        shutil.rmtree(folder, ignore_errors=True)


async def _create_template(cluster: EmbeddedPostgres) -> None:
    await cluster.create_database(TEMPLATE)
    db = Database(await create_pool(cluster.url_for(TEMPLATE), 2), "")
    try:
        await db.upgrade()
    finally:
        await db.close()


@pytest.fixture
def db_url(pg_cluster: EmbeddedPostgres) -> Iterator[str]:
    """URL of a brand-new migrated database cloned from the template (fast), dropped after."""
    name = f"test_{os.getpid()}_{next(_counter)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(
            host=str(pg_cluster.socket_dir), user="streamerhub", database="postgres"
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
    try:
        yield pg_cluster.url_for(name)
    finally:
        asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(await create_pool(db_url, 5), db_url)
    try:
        yield database
    finally:
        await database.close()


def make_settings(tmp_path: Path, config: str = "", **env: str) -> Settings:
    """Settings from a config text and env overrides only (the caller's environment is ignored)."""
    path = tmp_path / "config.toml"
    path.write_text(config)
    return load_settings(path, data_dir=str(tmp_path / "data"), env=env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    """`streamerhub run` as a real subprocess on a free port; always stopped by the test."""

    def __init__(self, data_dir: Path, config: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.port = free_port()
        self.env = {
            **os.environ,
            "STREAMERHUB_WEB_PORT": str(self.port),
            "STREAMERHUB_LOG_FORMAT": "json",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"daemon-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout: float = 30) -> "Daemon":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamerhub",
                "run",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30) -> dict:
        import json
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                    return json.loads(resp.read())
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"daemon not healthy after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the whole process group; then stop a PostgreSQL left behind."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        kill_postgres_of(self.data_dir)


def kill_postgres_of(data_dir: Path) -> None:
    from streamerhub.db import _pid_alive, postmaster_pid

    pid = postmaster_pid(data_dir / "postgres")
    if pid and _pid_alive(pid):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown of the postmaster and its children
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def daemon_factory() -> Iterator:
    """Make daemons with a temp data dir; every one is stopped at the end, pass or fail.

    The folder is outside pytest's basetemp for the reason given in pg_cluster.
    """
    folder = Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}daemon-"))
    # Traversable, as an admin would leave a data dir's parent: the cluster then stays in the data
    # dir (under a private parent a root daemon moves it away; test_hardening covers that).
    folder.chmod(0o711)
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    made: list[Daemon] = []

    def make(
        config: str = "", env: dict[str, str] | None = None, data_dir: Path | None = None
    ) -> Daemon:
        config_path = folder / f"config-{len(made)}.toml"
        config_path.write_text(config)
        daemon = Daemon(data_dir or folder / "data", config_path, env)
        made.append(daemon)
        return daemon

    try:
        yield make
    finally:
        for daemon in made:
            daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)
