"""The backup folder: one .dump per backup with a .json manifest beside it; listing, retention."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamerhub.config import Settings

UTC = dt.timezone.utc
PREFIX = "streamerhub-"
SUFFIX = ".dump"
STAMP = "%Y%m%dT%H%M%S%fZ"
NAME = re.compile(r"streamerhub-(\d{8}T\d{12}Z)-([a-z-]+)\.dump")
KEEP_BEFORE_UPGRADE = 3  # upgrades are rare; the last few are the ones worth going back to


def folder_of(settings: Settings) -> Path:
    chosen = settings.backup.folder
    return Path(chosen).expanduser().absolute() if chosen else settings.data_dir / "backups"


@dataclass
class Backup:
    """One backup file and what its manifest says about it."""

    path: Path
    created_at: dt.datetime
    kind: str  # daily, manual, before-upgrade
    size: int
    schema_version: int | None = None
    verified_at: dt.datetime | None = None
    rows: dict[str, int] = field(default_factory=dict)
    server_version: str = ""
    duration_s: float = 0.0

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def write_manifest(self) -> None:
        data: dict[str, Any] = asdict(self)
        data["path"] = self.path.name
        data["created_at"] = self.created_at.isoformat()
        data["verified_at"] = self.verified_at.isoformat() if self.verified_at else None
        tmp = self.manifest.with_suffix(".json.part")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.manifest)


def file_name(created_at: dt.datetime, kind: str) -> str:
    return f"{PREFIX}{created_at.astimezone(UTC).strftime(STAMP)}-{kind}{SUFFIX}"


def read_backup(path: Path) -> Backup | None:
    """What is known of one .dump: its manifest, else its name and size (not verified)."""
    match = NAME.fullmatch(path.name)
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if match is None:
        return None
    created = dt.datetime.strptime(match[1], STAMP).replace(tzinfo=UTC)
    backup = Backup(path, created, match[2], size)
    try:
        data = json.loads(backup.manifest.read_text())
    except (OSError, ValueError):
        return backup
    backup.schema_version = data.get("schema_version")
    backup.rows = {str(k): int(v) for k, v in (data.get("rows") or {}).items()}
    backup.server_version = str(data.get("server_version", ""))
    backup.duration_s = float(data.get("duration_s", 0.0))
    if data.get("verified_at"):
        backup.verified_at = dt.datetime.fromisoformat(data["verified_at"])
    return backup


def list_backups(folder: Path) -> list[Backup]:
    """Every backup in the folder, newest first; an absent folder holds none."""
    if not folder.is_dir():
        return []
    found = [read_backup(p) for p in folder.glob(f"{PREFIX}*{SUFFIX}")]
    return sorted((b for b in found if b), key=lambda b: b.created_at, reverse=True)


@dataclass(frozen=True)
class Retention:
    daily: int
    weekly: int
    monthly: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        b = settings.backup
        return cls(b.keep_daily, b.keep_weekly, b.keep_monthly)


def to_keep(backups: list[Backup], retention: Retention) -> set[Path]:
    """Grandfather-father-son: the newest backup of each of the last N days, weeks, months that
    have one, the newest backups taken before an upgrade, and always the newest of all."""
    newest_first = sorted(backups, key=lambda b: b.created_at, reverse=True)
    keep = {b.path for b in newest_first[:1]}
    upgrades = [b for b in newest_first if b.kind == "before-upgrade"]
    keep |= {b.path for b in upgrades[:KEEP_BEFORE_UPGRADE]}
    for count, period in (
        (retention.daily, lambda d: d.date()),
        (retention.weekly, lambda d: d.isocalendar()[:2]),
        (retention.monthly, lambda d: (d.year, d.month)),
    ):
        seen: set[Any] = set()
        for backup in newest_first:
            key = period(backup.created_at)
            if key not in seen and len(seen) < count:
                seen.add(key)
                keep.add(backup.path)
    return keep


def prune(folder: Path, retention: Retention) -> list[Path]:
    """Delete the backups retention does not keep (with their manifests); returns them."""
    backups = [b for b in list_backups(folder) if b.verified]
    keep = to_keep(backups, retention)
    removed = []
    for backup in backups:
        if backup.path not in keep:
            backup.path.unlink(missing_ok=True)
            backup.manifest.unlink(missing_ok=True)
            removed.append(backup.path)
    return removed
