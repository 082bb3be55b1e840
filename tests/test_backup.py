"""Backups with pg_dump / pg_restore against a real PostgreSQL: verified, pruned, restored onto a
fresh data dir with the same dashboard numbers, and failing with a message, never a crash."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
from dataclasses import asdict
from datetime import date
from pathlib import Path

import pytest
from conftest import make_settings
from test_analytics_queries import PARIS, build_dst_night
from test_store import cheer, make_store

from streamerhub.analytics.periods import calendar_period
from streamerhub.analytics.queries import stat_cards, time_series
from streamerhub.backup.archive import Backup, Retention, file_name, list_backups, prune, to_keep
from streamerhub.backup.restore import restore_backup
from streamerhub.backup.service import BackupService
from streamerhub.backup.tools import BackupError
from streamerhub.commands.main import main
from streamerhub.crypto import KEY_FILE, Keyring, load_keyring
from streamerhub.db import Database, EmbeddedPostgres, create_pool
from streamerhub.ffmpeg.targets import TargetStore
from streamerhub.web.users import UserStore

UTC = dt.timezone.utc
KEY = "live_123456789_abcdefghijklmnopqrstuvwxyza1b2"
NOW = dt.datetime(2026, 3, 30, 10, tzinfo=UTC)


async def populate(db: Database, keyring: Keyring) -> None:
    """Events, rollups, sessions, samples, a target with its sealed key, a job, users."""
    async with db.pool.acquire() as conn:
        await build_dst_night(conn)
        await conn.execute(
            "INSERT INTO stream_jobs (name, title, repeat_days) VALUES ('Rerun', 'Old', '{1,3}')"
        )
    await TargetStore(db, keyring).create(
        {"name": "Twitch alt", "url": "rtmp://live.twitch.tv/app", "stream_key": KEY}
    )
    await UserStore(db).create("mod", "viewer", None, "somemod")


async def dashboard(db: Database) -> tuple[object, ...]:
    """The numbers the overview shows for the populated night: cards and hourly chart."""
    period = calendar_period(PARIS, "day", date(2026, 3, 29))
    async with db.pool.acquire() as conn:
        cards = await stat_cards(conn, "c1", period, now=NOW)
        series = await time_series(conn, "c1", period, now=NOW)
    return (
        {name: (c.value, c.previous) for name, c in cards.cards.items()},
        [asdict(p) for p in series.points],
    )


async def counts(db: Database) -> dict[str, int]:
    from streamerhub.backup.service import count_rows

    async with db.pool.acquire() as conn:
        return await count_rows(conn)


def new_settings(folder: Path, config: str = "", **env: str):
    folder.mkdir(parents=True, exist_ok=True)
    return make_settings(folder, config, **env)


def service(tmp_path: Path, db: Database, config: str = "") -> BackupService:
    return BackupService(make_settings(tmp_path, config), db, embedded=True)


# ----------------------------------------------------------------------------- round trip


async def test_a_backup_restores_onto_a_fresh_data_dir_with_the_same_counts_and_numbers(
    db: Database, tmp_path: Path
) -> None:
    old_ring = load_keyring(tmp_path / "old", {}, create=True)
    await populate(db, old_ring)
    backups = service(tmp_path, db)
    backup = await backups.take("manual")
    assert backup.verified and backup.path.parent == tmp_path / "data" / "backups"
    assert backup.rows["twitch_events"] > 0 and backup.rows["stream_targets"] == 1
    assert [b.name for b in backups.backups()] == [backup.name]
    assert not any(p.suffix == ".part" for p in backup.path.parent.iterdir())

    # A fresh machine: its own master key already, the old one supplied to the restore.
    fresh = new_settings(tmp_path / "new")
    new_ring = load_keyring(fresh.data_dir, {}, create=True)
    done = await restore_backup(fresh, backup.path, old_ring.current)
    assert "1 secret(s) re-sealed" in done.key_note

    cluster = EmbeddedPostgres(fresh.data_dir)
    await cluster.start()
    restored = Database(await create_pool(cluster.url, 2), cluster.url)
    try:
        assert await counts(restored) == await counts(db) == done.rows
        for table in (
            "twitch_events",
            "analytics_event_rollup",
            "stream_sessions",
            "viewer_samples",
            "stream_targets",
            "stream_jobs",
            "web_users",
        ):
            assert done.rows[table] > 0, table
        assert await dashboard(restored) == await dashboard(db)
        target = (await TargetStore(restored, new_ring).list())[0]
        assert await TargetStore(restored, new_ring).open_key(target.id) == KEY
        assert await restored.pending() == []
    finally:
        await restored.close()
        await cluster.stop()


async def test_restore_refuses_a_non_empty_database_and_a_newer_schema(
    db: Database, tmp_path: Path
) -> None:
    async with db.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')"
        )
    backup = await service(tmp_path, db).take("manual")
    fresh = new_settings(tmp_path / "new")
    with pytest.raises(BackupError) as refused:
        await restore_backup(fresh, backup.path)
    assert "newer StreamerHub" in str(refused.value) and "9999_from_the_future" in str(
        refused.value
    )
    assert "upgrade StreamerHub" in str(refused.value)
    assert not (fresh.data_dir / "postgres").exists()  # nothing was started or written

    onto_itself = new_settings(tmp_path / "same", STREAMERHUB_DATABASE_URL=db.url)
    async with db.pool.acquire() as conn:
        await conn.execute("DELETE FROM schema_migrations WHERE version = 9999")
    backup = await service(tmp_path, db).take("manual")
    with pytest.raises(BackupError, match="already holds tables"):
        await restore_backup(onto_itself, backup.path)


# ----------------------------------------------------------------------------- during capture


async def test_a_backup_during_capture_loses_no_event(db: Database, tmp_path: Path) -> None:
    backups = service(tmp_path, db)
    async with make_store(db, tmp_path / "spool") as store:
        task = asyncio.create_task(backups.take("manual"))
        submitted = 0
        while not task.done():
            for _ in range(50):
                store.submit(cheer(submitted))
                submitted += 1
            await asyncio.sleep(0.01)
        backup = await task
        await store.drain()
    assert submitted > 50
    assert (await counts(db))["twitch_events"] == submitted
    assert backup.verified and 0 <= backup.rows["twitch_events"] <= submitted


# ----------------------------------------------------------------------------- retention


def test_retention_keeps_the_newest_of_each_day_week_and_month(tmp_path: Path) -> None:
    start = dt.datetime(2026, 1, 1, 3, 30, tzinfo=UTC)
    for day in range(120):  # a backup a day for four months, two on some days
        for extra in (0, 1) if day % 10 == 0 else (0,):
            at = start + dt.timedelta(days=day, hours=extra)
            Backup(tmp_path / file_name(at, "daily"), at, "daily", 1, verified_at=at).path.touch()
            Backup(
                tmp_path / file_name(at, "daily"), at, "daily", 1, verified_at=at
            ).write_manifest()
    removed = prune(tmp_path, Retention(daily=7, weekly=4, monthly=3))
    kept = list_backups(tmp_path)
    days = sorted({b.created_at.date() for b in kept}, reverse=True)
    assert len(kept) == len(days)  # one per kept day
    newest = start + dt.timedelta(days=119)
    assert days[:7] == [(newest - dt.timedelta(days=i)).date() for i in range(7)]
    assert len(kept) == 7 + 2 + 2  # 7 days; weeks 2 more (two fall inside the days); months 2 more
    assert len(removed) + len(kept) == 132
    assert not any(
        p.suffix == ".json" and not p.with_suffix(".dump").exists() for p in tmp_path.iterdir()
    )


def test_backups_before_an_upgrade_outlive_daily_retention() -> None:
    at = dt.datetime(2026, 1, 1, tzinfo=UTC)
    old = Backup(Path("u.dump"), at, "before-upgrade", 1)
    dailies = [
        Backup(Path(f"{i}.dump"), at + dt.timedelta(days=i), "daily", 1) for i in range(1, 5)
    ]
    keep = to_keep([old, *dailies], Retention(daily=2, weekly=0, monthly=0))
    assert keep == {Path("u.dump"), Path("4.dump"), Path("3.dump")}


# ----------------------------------------------------------------------------- failures


async def test_an_unwritable_folder_is_a_clear_error_and_a_banner(
    db: Database, tmp_path: Path
) -> None:
    (tmp_path / "not-a-folder").write_text("a file where the folder should be")
    backups = service(tmp_path, db, f'[backup]\nfolder = "{tmp_path}/not-a-folder/backups"\n')
    with pytest.raises(BackupError) as failed:
        await backups.take("daily")
    assert "not-a-folder/backups is not writable" in str(failed.value)
    assert "[backup] folder" in str(failed.value)
    assert await backups.take_safely("daily") is None  # the scheduler's way: no exception
    banner = backups.banner()
    assert banner and banner.startswith("No backup of the database exists yet")
    assert "is not writable" in banner


@pytest.fixture
def tiny_folder(tmp_path: Path):
    """A 64 KiB tmpfs: a disk that fills up during the dump (needs root to mount)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


async def test_a_full_disk_is_a_clear_error_and_keeps_no_partial_file(
    db: Database, tmp_path: Path, tiny_folder: Path
) -> None:
    async with db.pool.acquire() as conn:
        await build_dst_night(conn)
        await conn.execute(
            "INSERT INTO dead_letters (source, reason, raw) SELECT 'test', 'filler', md5(i::text) || repeat(md5((i * 7)::text), 20) "
            "FROM generate_series(1, 3000) i"
        )
    backups = service(tmp_path, db, f'[backup]\nfolder = "{tiny_folder}"\n')
    with pytest.raises(BackupError) as failed:
        await backups.take("daily")
    message = str(failed.value)
    assert "No space left on device" in message and "free space in" in message
    assert list(tiny_folder.iterdir()) == []
    assert backups.banner() is not None


# ----------------------------------------------------------------------------- schedule


def test_the_daily_backup_runs_at_the_configured_local_time_or_soon_after_a_miss(
    db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, '[general]\ntimezone = "Europe/Paris"\n[backup]\nschedule = "03:30"\n'
    )
    backups = BackupService(settings, None, embedded=True)  # type: ignore[arg-type]
    now = dt.datetime(2026, 7, 1, 12, tzinfo=UTC)
    # No backup yet: ten minutes after start rather than tomorrow night.
    assert backups.next_run(now) == now + dt.timedelta(minutes=10)
    folder = settings.data_dir / "backups"
    folder.mkdir(parents=True)
    recent = now - dt.timedelta(hours=3)
    Backup(folder / file_name(recent, "daily"), recent, "daily", 1, verified_at=recent).path.touch()
    Backup(
        folder / file_name(recent, "daily"), recent, "daily", 1, verified_at=recent
    ).write_manifest()
    assert backups.next_run(now) == dt.datetime(2026, 7, 2, 1, 30, tzinfo=UTC)  # 03:30 CEST
    off = new_settings(tmp_path / "off", '[backup]\nschedule = ""\n')
    assert BackupService(off, None, embedded=True).next_run(now) is None  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the command


def test_backup_commands_take_list_and_restore(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("STREAMERHUB_DATABASE_URL", db_url)
    monkeypatch.setenv("STREAMERHUB_LOG_LEVEL", "warning")
    base = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    assert main(["backup", "now", *base]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "backups/streamerhub-" in out
    assert main(["backup", "list", *base]) == 0
    listed = capsys.readouterr().out
    assert "manual" in listed and "verified" in listed
    file = next((tmp_path / "data" / "backups").glob("*.dump"))

    # The master key, sealed with a passphrase, may travel with the backups.
    key = load_keyring(tmp_path / "data", {}, create=True)
    monkeypatch.setenv("STREAMERHUB_KEY_PASSPHRASE", "four random words here")
    assert main(["backup", "export-key", *base]) == 0
    sealed = tmp_path / "data" / "backups" / "master-key.sealed"
    assert oct(sealed.stat().st_mode & 0o777) == "0o600"
    assert key.current not in sealed.read_bytes() and b"master" not in sealed.read_bytes()[30:]
    capsys.readouterr()

    monkeypatch.delenv("STREAMERHUB_DATABASE_URL")
    to = ["--to", str(tmp_path / "fresh"), "--master-key", str(sealed), *base[:2]]
    monkeypatch.setenv("STREAMERHUB_KEY_PASSPHRASE", "not the passphrase")
    assert main(["backup", "restore", str(file), *to]) == 1
    assert "does not open with this passphrase" in capsys.readouterr().err
    monkeypatch.setenv("STREAMERHUB_KEY_PASSPHRASE", "four random words here")
    assert main(["backup", "restore", str(file), *to]) == 0
    out = capsys.readouterr().out
    assert "restored" in out and "schema" in out and "installed" in out
    assert load_keyring(tmp_path / "fresh", {}, create=False).current == key.current
    assert main(["backup", "restore", str(tmp_path / "nope.dump"), *base]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- dashboard


async def test_settings_lists_starts_and_serves_backups_and_every_page_warns_when_stale(
    db_url: str, tmp_path: Path
) -> None:
    from web_support import csrf_of, dashboard

    from streamerhub.app import BACKUPS

    async with dashboard(tmp_path, db_url) as dash:
        await dash.create_owner()
        await dash.login("owner")
        page = await (await dash.client.get("/settings")).text()
        assert 'id="backups"' in page and "none yet" in page and "backup-banner" not in page
        resp = await dash.client.post(
            "/settings/backups", data={"csrf_token": csrf_of(page)}, allow_redirects=False
        )
        assert resp.status == 303
        backups = dash.app[BACKUPS]
        for _ in range(300):
            if backups.backups() and not backups.running:
                break
            await asyncio.sleep(0.05)
        page = await (await dash.client.get("/settings")).text()
        backup = backups.backups()[0]
        assert f"/settings/backups/{backup.name}" in page and "rows restored and counted" in page
        download = await dash.client.get(f"/settings/backups/{backup.name}")
        assert download.status == 200 and (await download.read())[:5] == b"PGDMP"
        assert (await dash.client.get("/settings/backups/..%2Fmaster.key")).status == 404

        # Three days later without a new backup, and the folder gone bad: every page says so.
        old = backup.created_at - dt.timedelta(days=3)
        backup.path.rename(backup.path.with_name(file_name(old, "manual")))
        backup.manifest.unlink()
        Backup(
            backup.path.with_name(file_name(old, "manual")), old, "manual", 1, verified_at=old
        ).write_manifest()
        (tmp_path / "file").write_text("")
        backups.folder = tmp_path / "file" / "backups"
        assert backups.start()
        while backups.running or not backups.last_failure:
            await asyncio.sleep(0.05)
        backups.folder = backup.path.parent
        overview = await (await dash.client.get("/")).text()
        assert "backup-banner" in overview and "3 days old" in overview
        assert "Last attempt failed" in overview and "is not writable" in overview


async def test_a_backup_is_taken_before_migrations_change_an_existing_schema(
    db: Database, tmp_path: Path
) -> None:
    from streamerhub.backup.service import backup_before_upgrade

    backups = service(tmp_path, db)
    await backup_before_upgrade(backups)  # up to date: nothing to protect
    assert backups.backups() == []
    *_, previous, latest = sorted(await db.applied_versions())  # numbers may skip (branches)
    async with db.pool.acquire() as conn:  # as if this StreamerHub brought the latest migration
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", latest)
    await backup_before_upgrade(backups)
    [taken] = backups.backups()
    assert taken.kind == "before-upgrade" and taken.verified
    assert taken.schema_version == previous
