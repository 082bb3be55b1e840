"""pg_dump and pg_restore: found next to the server's own binaries, run as child processes."""

from __future__ import annotations

import asyncio
import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from streamerhub.db import INSTALL_HINT, pg_binaries, redact_url
from streamerhub.errors import StreamerHubError

# Only the schema table's rows are read back from a dump, to know which schema it holds.
MIGRATIONS_TABLE = "schema_migrations"


class BackupError(StreamerHubError):
    """A backup could not be taken, checked, listed or restored; the message says what to do."""


@dataclass(frozen=True)
class PgTools:
    """The pg_dump / pg_restore pair of one PostgreSQL installation."""

    bindir: Path
    major: int

    @property
    def pg_dump(self) -> Path:
        return self.bindir / "pg_dump"

    @property
    def pg_restore(self) -> Path:
        return self.bindir / "pg_restore"


def find_tools(server_major: int | None = None) -> PgTools:
    """The pg_dump / pg_restore to use: those of the server's own major version when this machine
    has them (the embedded cluster's, see db.pg_binaries), else the oldest newer one (pg_dump
    refuses a newer server, and a newer client reads an older server)."""
    folders = [(b.bindir, b.major) for b in pg_binaries()]
    system = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major_of_path, reverse=True)
    folders += [(Path(p), _major_of_path(p)) for p in system]  # client-only installs too
    on_path = shutil.which("pg_dump")
    if on_path and (Path(on_path).resolve().parent / "pg_dump").is_file():
        folder = Path(on_path).resolve().parent  # not Debian's wrapper: the real binary's folder
        folders.append((folder, _major_of_binary(folder)))
    found = [
        PgTools(folder, major)
        for folder, major in folders
        if (folder / "pg_dump").is_file() and (folder / "pg_restore").is_file()
    ]
    if not found:
        raise BackupError(f"pg_dump and pg_restore not found: {INSTALL_HINT}")
    if server_major is None:
        return found[0]
    usable = sorted((t for t in found if t.major >= server_major), key=lambda t: t.major)
    if usable:
        return usable[0]
    newest = max(t.major for t in found)
    raise BackupError(
        f"the database server is PostgreSQL {server_major} but the newest pg_dump found is "
        f"{newest}: install the client of version {server_major} or newer "
        f"(Debian/Ubuntu: apt-get install postgresql-client-{server_major})"
    )


def _major_of_path(path: str) -> int:
    match = re.search(r"/(\d+)/bin$", path)
    return int(match[1]) if match else 0


def _major_of_binary(folder: Path) -> int:
    # pgserver's folder name carries no version: ask the binary.
    out = subprocess.run([str(folder / "pg_dump"), "--version"], capture_output=True, text=True)
    match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
    return int(match[1]) if match else 0


def connection(url: str) -> tuple[str, dict[str, str]]:
    """The libpq URL without its password (argv is readable by local users) and the
    environment that carries the password instead."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        user = parts.username or ""
        host = parts.hostname or ""
        netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url, env


async def run_tool(tool: Path, *args: str, url: str, what: str) -> bytes:
    """Run one PostgreSQL client tool off the event loop; its stdout, or BackupError."""
    dsn, env = connection(url)
    proc = None
    try:
        proc = await asyncio.create_subprocess_exec(
            str(tool),
            *args,
            f"--dbname={dsn}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        out, err = await proc.communicate()
    except OSError as exc:
        raise BackupError(f"could not {what}: cannot run {tool} ({exc.strerror})") from None
    except asyncio.CancelledError:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()[-3:]
        detail = redact_url(" / ".join(lines)) or f"{tool.name} exited {proc.returncode}"
        raise BackupError(f"could not {what}: {detail}")
    return out


async def dump(tools: PgTools, url: str, out: Path, snapshot: str | None) -> None:
    """A compressed custom-format dump of the whole database, as of `snapshot` if given."""
    args = ["--format=custom", "--compress=6", f"--file={out}"]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    await run_tool(tools.pg_dump, *args, url=url, what=f"write the backup {out}")


async def restore(tools: PgTools, url: str, path: Path) -> None:
    """Load a dump into an empty database in one transaction: all of it or nothing."""
    await run_tool(
        tools.pg_restore,
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        str(path),
        url=url,
        what=f"restore {path} into {redact_url(url)}",
    )


async def schema_versions(tools: PgTools, path: Path) -> dict[int, str]:
    """The schema migrations a dump records, read from the dump itself (no server needed)."""
    proc = await asyncio.create_subprocess_exec(
        str(tools.pg_restore),
        "--data-only",
        f"--table={MIGRATIONS_TABLE}",
        "--file=-",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()[-1:]
        raise BackupError(
            f"{path} is not a StreamerHub backup pg_restore can read "
            f"({' '.join(detail) or 'unknown format'}): pick a .dump file made by "
            "`streamerhub backup now`"
        )
    versions: dict[int, str] = {}
    inside = False
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("COPY ") and MIGRATIONS_TABLE in line:
            inside = True
        elif inside and line == "\\.":
            break
        elif inside:
            version, name = line.split("\t")[:2]
            versions[int(version)] = name
    return versions
