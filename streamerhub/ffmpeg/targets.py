"""RTMP targets: where a job pushes to. The stream key is sealed and write-only.

The API and pages only ever see a hint (``••••a1b2``); the clear key exists only in memory, for
the FFmpeg child that needs it, and is registered with the log redactor as soon as it is opened.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from streamerhub.crypto import Keyring, aad_for
from streamerhub.db import REFERENCE_VIOLATIONS, Database
from streamerhub.errors import Conflict, InvalidInput, NotFound
from streamerhub.ffmpeg.presets import preset_url
from streamerhub.log import MASK, register_secret

TABLE, KEY_COLUMN = "stream_targets", "stream_key_sealed"
FIELDS = ("name", "url", "stream_key", "enabled", "channel_id", "ca_file", "test_key")


@dataclass(frozen=True)
class Target:
    id: int
    name: str
    url: str
    key_hint: str
    enabled: bool
    channel_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    ca_file: str | None = None
    key_test: dict[str, Any] | None = None  # the last key test: result, ok, message, at
    account: dict[str, Any] | None = None  # the linked Twitch account (ffmpeg/linked.py)

    def to_json(self) -> dict[str, Any]:
        """What the API shows: never the key, only its hint."""
        return {
            "id": self.id,
            "name": self.name,
            "url": shown_url(self.url),
            "stream_key": MASK + self.key_hint,
            "enabled": self.enabled,
            "channel_id": self.channel_id,
            "ca_file": self.ca_file,
            "key_test": self.key_test,
            "account": self.account,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


# ----------------------------------------------------------------------------- validation


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("name: give the target a name (e.g. 'YouTube main')")
    if len(value.strip()) > 100:
        raise InvalidInput("name: at most 100 characters")
    return value.strip()


def check_url(value: Any) -> str:
    """An rtmp:// or rtmps:// ingest URL with a host, without whitespace."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("url: give the ingest URL, e.g. rtmp://live.twitch.tv/app")
    url = value.strip()
    if any(c.isspace() for c in url):
        raise InvalidInput("url: the ingest URL must not contain spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("url: not a valid URL (check the host and port)") from None
    if parts.scheme.lower() not in ("rtmp", "rtmps"):
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise InvalidInput(f"url: must start with rtmp:// or rtmps:// (got {shown})")
    if not parts.hostname:
        raise InvalidInput("url: has no host, e.g. rtmp://live.twitch.tv/app")
    if port == 0:
        raise InvalidInput("url: port 0 is not a valid port")
    # FFmpeg's protocol names are lower case: RTMP:// made every run fail ("Protocol not found")
    # and the target crash-loop, so the scheme is stored the way FFmpeg understands it.
    return urlunsplit(parts._replace(scheme=parts.scheme.lower()))


def check_key(value: Any) -> str:
    if not isinstance(value, str) or value == "":
        raise InvalidInput(
            "stream_key: must not be empty (copy it from the platform's stream settings)"
        )
    if any(c.isspace() for c in value):
        raise InvalidInput(
            "stream_key: must not contain spaces or line breaks (check the copied text)"
        )
    if not value.isprintable():
        # A NUL or other control character cuts or corrupts the URL FFmpeg sends: every run
        # failed and was retried forever.
        raise InvalidInput(
            "stream_key: contains an invisible control character (copy the key again)"
        )
    if len(value) > 500:
        raise InvalidInput("stream_key: at most 500 characters")
    return value


def check_enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("enabled: must be true or false")
    return value


def check_channel(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InvalidInput("channel_id: must be a Twitch channel id (text) or null")
    return str(value)


def check_ca_file(value: Any) -> str | None:
    """An absolute path to a readable PEM file, or null for the [ffmpeg] ca_file / system one.

    Checked when it is set, so a typo is a clear 400 now, not a TLS error at air time.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        raise InvalidInput("ca_file: give the absolute path of a PEM file (or null)")
    try:
        with open(value, "rb") as fh:
            head = fh.read(65536)
    except OSError as exc:
        raise InvalidInput(
            f"ca_file: cannot read {value} ({exc.strerror}): check the path and that the "
            "daemon's user may read it"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise InvalidInput(f"ca_file: {value} holds no PEM certificate (-----BEGIN CERTIFICATE)")
    return value


def check_flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("test_key: must be true or false")
    return value


_CHECKS = {
    "name": check_name,
    "url": check_url,
    "stream_key": check_key,
    "enabled": check_enabled,
    "channel_id": check_channel,
    "ca_file": check_ca_file,
    "test_key": check_flag,
}


def check_body(body: Any, known: Sequence[str], required: Sequence[str], partial: bool) -> None:
    """A JSON object with only known fields and, unless partial, every required one."""
    if not isinstance(body, Mapping):
        raise InvalidInput(f"send a JSON object with {', '.join(required)}")
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r} (known: {', '.join(known)})")
    missing = [] if partial else [f for f in required if f not in body]
    if missing:
        raise InvalidInput(f"{missing[0]}: required")


def parse_target(body: Any, partial: bool = False) -> dict[str, Any]:
    """Validate a create (all of name, url, stream_key) or an edit (any subset) request.

    A "preset" (and for Twitch a "region") stands for the platform's ingest URL."""
    if isinstance(body, Mapping) and ("preset" in body or "region" in body):
        url = preset_url(body)
        body = {k: v for k, v in body.items() if k not in ("preset", "region")}
        body["url"] = url
    check_body(body, FIELDS, ("name", "url", "stream_key"), partial)
    return {field: _CHECKS[field](value) for field, value in body.items()}


def key_hint(key: str) -> str:
    """The last four characters, only when the key is long enough for that to reveal little."""
    return key[-4:] if len(key) >= 12 else ""


def output_url(url: str, key: str) -> str:
    """The full publish URL FFmpeg needs: the key appended to the ingest URL's path.

    A query (``?bandwidthtest=true``, a platform's token) stays at the end, after the key.
    """
    parts = urlsplit(url)
    path = f"{parts.path.rstrip('/')}/{key}"
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, parts.query, ""))


def shown_url(url: str) -> str:
    """The ingest URL as the API and pages show it: a query (often a token) is masked."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    return urlunsplit((parts.scheme, parts.netloc, parts.path, MASK, ""))


# ----------------------------------------------------------------------------- storage

_COLUMNS = """id, name, url, key_hint, enabled, channel_id, created_at, updated_at, ca_file,
    key_test, (SELECT to_jsonb(a) - 'target_id' FROM stream_linked_accounts a
                WHERE a.target_id = stream_targets.id) AS account"""


class TargetStore:
    """Targets in PostgreSQL; the only code that seals and opens stream keys."""

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self.db = db
        self.keyring = keyring

    async def list(self) -> list[Target]:
        rows = await self.db.pool.fetch(f"SELECT {_COLUMNS} FROM stream_targets ORDER BY id")
        return [Target(**r) for r in rows]

    async def get(self, target_id: int) -> Target:
        row = await self.db.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM stream_targets WHERE id = $1", target_id
        )
        if row is None:
            raise NotFound(f"no target with id {target_id}")
        return Target(**row)

    async def create(self, body: Any) -> Target:
        """Validate and store a target, sealing its key under the row's own id."""
        fields = parse_target(body)
        key = fields["stream_key"]
        register_secret(key)
        async with self.db.pool.acquire() as conn, conn.transaction():
            target_id = await conn.fetchval(
                "SELECT nextval(pg_get_serial_sequence('stream_targets', 'id'))"
            )
            sealed = self.keyring.seal(key, aad_for(TABLE, target_id, KEY_COLUMN))
            row = await _write(
                conn,
                """
                INSERT INTO stream_targets (id, name, url, stream_key_sealed, key_hint, enabled,
                                            channel_id, ca_file)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING """
                + _COLUMNS,
                target_id,
                fields["name"],
                fields["url"],
                sealed,
                key_hint(key),
                fields.get("enabled", True),
                fields.get("channel_id"),
                fields.get("ca_file"),
            )
        assert row is not None  # INSERT … RETURNING always returns the new row
        return Target(**row)

    async def update(self, target_id: int, body: Any) -> Target:
        """Change any fields; a missing stream_key keeps the stored one."""
        fields = parse_target(body, partial=True)
        current = await self.get(target_id)
        if fields.get("url") == shown_url(current.url):
            fields["url"] = current.url  # the form sent back the masked URL: nothing changed
        sealed, hint = None, None
        if "stream_key" in fields:
            register_secret(fields["stream_key"])
            sealed = self.keyring.seal(fields["stream_key"], aad_for(TABLE, target_id, KEY_COLUMN))
            hint = key_hint(fields["stream_key"])
        async with self.db.pool.acquire() as conn:
            row = await _write(
                conn,
                """
                UPDATE stream_targets
                   SET name = $2, url = $3, enabled = $4, channel_id = $5,
                       stream_key_sealed = COALESCE($6, stream_key_sealed),
                       key_hint = COALESCE($7, key_hint), ca_file = $8,
                       key_test = CASE WHEN $6::bytea IS NULL AND $3 = url THEN key_test END,
                       updated_at = now()
                 WHERE id = $1 RETURNING """
                + _COLUMNS,
                target_id,
                fields.get("name", current.name),
                fields.get("url", current.url),
                fields.get("enabled", current.enabled),
                fields["channel_id"] if "channel_id" in fields else current.channel_id,
                sealed,
                hint,
                fields["ca_file"] if "ca_file" in fields else current.ca_file,
            )
        if row is None:
            raise NotFound(f"no target with id {target_id}")
        return Target(**row)

    async def record_key_test(self, target_id: int, result: dict[str, Any]) -> None:
        """Keep the last key test's answer, shown with the target until the key or URL changes."""
        await self.db.pool.execute(
            "UPDATE stream_targets SET key_test = $2 WHERE id = $1", target_id, result
        )

    async def delete(self, target_id: int) -> None:
        try:
            done = await self.db.pool.execute("DELETE FROM stream_targets WHERE id = $1", target_id)
        except REFERENCE_VIOLATIONS:
            jobs = await self.db.pool.fetch(
                "SELECT j.name FROM stream_job_targets t JOIN stream_jobs j ON j.id = t.job_id "
                "WHERE t.target_id = $1 ORDER BY j.id",
                target_id,
            )
            names = ", ".join(repr(r["name"]) for r in jobs)
            raise Conflict(
                f"target {target_id} is used by job {names}: remove it from the job(s) first"
            ) from None
        if done.endswith(" 0"):
            raise NotFound(f"no target with id {target_id}")

    async def open_key(self, target_id: int) -> str:
        """The clear stream key, for the FFmpeg child only; registered with the redactor."""
        blob = await self.db.pool.fetchval(
            "SELECT stream_key_sealed FROM stream_targets WHERE id = $1", target_id
        )
        if blob is None:
            raise NotFound(f"no target with id {target_id}")
        key = self.keyring.open_str(blob, aad_for(TABLE, target_id, KEY_COLUMN))
        register_secret(key)
        return key

    async def register_all_keys(self) -> int:
        """Open every key once at start so the redactor knows them before FFmpeg prints any."""
        ids = [r["id"] for r in await self.db.pool.fetch("SELECT id FROM stream_targets")]
        for target_id in ids:
            await self.open_key(target_id)
        return len(ids)


async def _write(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.Record | None:
    try:
        return await conn.fetchrow(sql, *args)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"name: a target named {args[1]!r} already exists") from None
    except REFERENCE_VIOLATIONS:
        raise InvalidInput(
            "channel_id: no connected Twitch channel has this id (connect the "
            "channel first, or leave channel_id empty)"
        ) from None
