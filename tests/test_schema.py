"""Schema: schema.sql equals the migrations in order; newer databases are refused; wheels ship SQL."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from streamerhub.db import MIGRATIONS_TABLE, Database, create_pool, load_migrations
from streamerhub.errors import DatabaseError

ROOT = Path(__file__).resolve().parent.parent


async def _fresh(cluster, name: str) -> Database:
    conn = await asyncpg.connect(
        host=str(cluster.socket_dir), user="streamerhub", database="postgres"
    )
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()
    await cluster.create_database(name)
    return Database(await create_pool(cluster.url_for(name), 2), cluster.url_for(name))


def _dump(cluster, name: str) -> str:
    out = subprocess.run(
        [
            str(cluster.bindir / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "-h",
            str(cluster.socket_dir),
            "-U",
            "streamerhub",
            name,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # psql meta-commands with random per-dump tokens (\restrict) are not schema.
    return "\n".join(line for line in out.splitlines() if not line.startswith("\\"))


async def test_schema_sql_equals_migrations_in_order(pg_cluster) -> None:
    fresh = await _fresh(pg_cluster, "schema_fresh")
    stepped = await _fresh(pg_cluster, "schema_stepped")
    try:
        await fresh.upgrade()  # a fresh database gets schema.sql
        async with stepped.pool.acquire() as conn:
            await conn.execute(MIGRATIONS_TABLE)
            for migration in load_migrations():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
        assert await stepped.upgrade() == []
    finally:
        await fresh.close()
        await stepped.close()
    assert _dump(pg_cluster, "schema_fresh") == _dump(pg_cluster, "schema_stepped")


async def test_upgrade_is_idempotent(db: Database) -> None:
    assert await db.upgrade() == []
    applied = await db.applied_versions()
    assert sorted(applied) == [m.version for m in load_migrations()]


async def test_pending_migrations_are_announced_before_they_run(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0019 backfills for about 14 minutes on a 30M-event history: the log says so first,
    instead of nothing between the backup and the dashboard."""
    import streamerhub.db

    said: list[tuple[str, dict[str, Any]]] = []

    class Recorder:  # whatever structlog's configuration by earlier tests
        def info(self, event: str, **fields: Any) -> None:
            said.append((event, fields))

    monkeypatch.setattr(streamerhub.db, "log", Recorder())
    latest = load_migrations()[-1]
    await db.pool.execute("DELETE FROM schema_migrations WHERE version = $1", latest.version)
    assert await db.upgrade() == [latest]
    assert [event for event, _ in said] == ["migrations_running", "migration_applied"], said
    assert said[0][1]["migrations"] == [f"{latest.version:04d}_{latest.name}"]
    assert "takes minutes" in said[0][1]["note"]


async def test_database_newer_than_code_is_refused(db: Database) -> None:
    await db.pool.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    with pytest.raises(DatabaseError, match="newer than this StreamerHub.*9999_future"):
        await db.upgrade()


def test_wheel_ships_schema_and_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("streamerhub-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "streamerhub/schema.sql" in names
    for migration in load_migrations():
        assert f"streamerhub/migrations/{migration.version:04d}_{migration.name}.sql" in names
    shipped = zipfile.ZipFile(wheel).read("streamerhub/schema.sql").decode()
    assert shipped == (ROOT / "schema.sql").read_text()
