"""Dashboard users and their server-side sessions (web_users, web_sessions)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from streamerhub.db import Database
from streamerhub.errors import StreamerHubError

ROLES = ("owner", "viewer")
MIN_PASSWORD = 10
_HASHER = PasswordHasher()  # argon2id, 64 MiB, t=3: ~50 ms per check on this machine
# Verifying an unknown login still costs one hash, so timing does not reveal which logins exist.
_DUMMY_HASH = _HASHER.hash("streamerhub-dummy-password")
MAX_USER_ID = 2**63 - 1  # web_users.id is a bigint
LOGIN_RE = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,63}")


class UserError(StreamerHubError):
    """Bad input on a user form; the message is shown next to the form."""


@dataclass(frozen=True)
class User:
    id: int
    login: str
    role: str
    has_password: bool
    twitch_login: str | None
    last_login_at: dt.datetime | None
    twitch_user_id: str | None = None  # bound at the first Twitch sign-in

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"


@dataclass(frozen=True)
class SessionUser:
    """The user behind a live session, with how they signed in."""

    user: User
    method: str
    expires_at: dt.datetime


def _user(row: asyncpg.Record) -> User:
    return User(
        row["id"],
        row["login"],
        row["role"],
        row["password_hash"] is not None,
        row["twitch_login"],
        row["last_login_at"],
        row["twitch_user_id"],
    )


def check_login(value: str) -> str:
    login = (value or "").strip().lower()
    if not LOGIN_RE.fullmatch(login):
        raise UserError("Login: 1–64 characters, letters, digits, '_', '.' or '-'.")
    return login


def check_password(password: str, confirm: str | None = None) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise UserError(f"Password: at least {MIN_PASSWORD} characters.")
    if len(password) > 1024:
        raise UserError("Password: at most 1024 characters.")
    if not _encodable(password) or "\x00" in password:
        raise UserError("Password: no NUL characters or broken Unicode (lone surrogates).")
    if confirm is not None and confirm != password:
        raise UserError("The two passwords differ: type the same password twice.")
    return password


async def hash_password(password: str) -> str:
    # argon2 is deliberately slow: keep it off the event loop so the feed stays live.
    return await asyncio.to_thread(_HASHER.hash, password)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def verify_password(stored: str | None, password: str) -> bool:
    if len(password) > 1024 or not _encodable(password):
        password = ""  # no account has it; still one hash, so the timing says nothing

    def check() -> bool:
        try:
            return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


class UserStore:
    """Named SQL over web_users / web_sessions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def owner_exists(self) -> bool:
        async with self.db.pool.acquire() as conn:
            return bool(await conn.fetchval(OWNER_EXISTS))

    async def list(self) -> list[User]:
        async with self.db.pool.acquire() as conn:
            return [_user(r) for r in await conn.fetch(LIST_USERS)]

    async def by_login(self, login: str) -> tuple[User, str | None] | None:
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(BY_LOGIN, login.strip().lower())
        return (_user(row), row["password_hash"]) if row else None

    async def by_twitch_login(self, twitch_login: str) -> User | None:
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(BY_TWITCH_LOGIN, twitch_login.lower())
        return _user(row) if row else None

    async def by_twitch_id(self, twitch_user_id: str) -> User | None:
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(BY_TWITCH_ID, twitch_user_id)
        return _user(row) if row else None

    async def bind_twitch(self, user: User, twitch_user_id: str, twitch_login: str) -> User:
        """Tie a user added by Twitch login (never signed in with Twitch) to the account's id;
        UserError when another sign-in tied it first."""
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(BIND_TWITCH, user.id, twitch_user_id, twitch_login.lower())
        if row is None:
            raise UserError("This Twitch login is already tied to another Twitch account.")
        return _user(row)

    async def create(
        self,
        login: str,
        role: str,
        password: str | None = None,
        twitch_login: str | None = None,
        twitch_user_id: str | None = None,
    ) -> User:
        """Add a user; UserError when the login (or Twitch login) is taken."""
        if role not in ROLES:
            raise UserError(f"Role: one of {', '.join(ROLES)}.")
        hashed = await hash_password(password) if password else None
        try:
            async with self.db.pool.acquire() as conn:
                row = await conn.fetchrow(
                    CREATE_USER,
                    check_login(login),
                    role,
                    hashed,
                    twitch_login.lower() if twitch_login else None,
                    twitch_user_id,
                )
        except asyncpg.UniqueViolationError:
            raise UserError(
                f"A user named {login!r} (or with that Twitch login) exists already."
            ) from None
        return _user(row)

    async def set_password(self, user_id: int, password: str) -> None:
        """Change a password and end every session of that user (they sign in again)."""
        hashed = await hash_password(password)
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(SET_PASSWORD, user_id, hashed)
            await conn.execute(END_USER_SESSIONS, user_id)

    async def delete(self, user_id: int) -> None:
        if user_id > MAX_USER_ID:  # no row has it, and bigint would refuse it with a 500
            raise UserError("No such user.")
        async with self.db.pool.acquire() as conn:
            role = await conn.fetchval("SELECT role FROM web_users WHERE id = $1", user_id)
            owners = await conn.fetchval("SELECT count(*) FROM web_users WHERE role = 'owner'")
            if role == "owner" and owners <= 1:
                raise UserError("This is the only owner: add another owner before removing it.")
            await conn.execute("DELETE FROM web_users WHERE id = $1", user_id)

    async def start_session(
        self, user: User, method: str, days: int, user_agent: str | None
    ) -> str:
        """Open a session; returns the random id that only the cookie holds."""
        session_id = secrets.token_urlsafe(32)
        async with self.db.pool.acquire() as conn:
            await conn.execute(
                START_SESSION,
                session_hash(session_id),
                user.id,
                method,
                dt.timedelta(days=days),
                (user_agent or "")[:300],
            )
            await conn.execute("UPDATE web_users SET last_login_at = now() WHERE id = $1", user.id)
            await conn.execute(PURGE_EXPIRED)  # sign-ins are rare: a good moment to tidy up
        return session_id

    async def session_user(self, session_id: str) -> SessionUser | None:
        key = session_hash(session_id)
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(SESSION_USER, key)
            if row is not None and row["stale"]:
                await conn.execute(TOUCH_SESSION, key)
        if row is None:
            return None
        return SessionUser(_user(row), row["method"], row["expires_at"])

    async def end_session(self, session_id: str) -> None:
        async with self.db.pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM web_sessions WHERE id_hash = $1", session_hash(session_id)
            )


OWNER_EXISTS = "SELECT EXISTS (SELECT 1 FROM web_users WHERE role = 'owner')"
LIST_USERS = "SELECT * FROM web_users ORDER BY role, login"
BY_LOGIN = "SELECT * FROM web_users WHERE login = $1"
BY_TWITCH_LOGIN = "SELECT * FROM web_users WHERE twitch_login = $1"
BY_TWITCH_ID = "SELECT * FROM web_users WHERE twitch_user_id = $1"
BIND_TWITCH = """
UPDATE web_users SET twitch_user_id = $2, twitch_login = $3, updated_at = now()
 WHERE id = $1 AND twitch_user_id IS NULL
RETURNING *"""
CREATE_USER = """
INSERT INTO web_users (login, role, password_hash, twitch_login, twitch_user_id)
VALUES ($1, $2, $3, $4, $5)
RETURNING *"""
SET_PASSWORD = "UPDATE web_users SET password_hash = $2, updated_at = now() WHERE id = $1"
END_USER_SESSIONS = "DELETE FROM web_sessions WHERE user_id = $1"
PURGE_EXPIRED = "DELETE FROM web_sessions WHERE expires_at < now()"
START_SESSION = """
INSERT INTO web_sessions (id_hash, user_id, method, expires_at, user_agent)
VALUES ($1, $2, $3, now() + $4::interval, $5)"""
SESSION_USER = """
SELECT u.*, s.method, s.expires_at, s.last_seen_at < now() - interval '1 minute' AS stale
  FROM web_sessions s JOIN web_users u ON u.id = s.user_id
 WHERE s.id_hash = $1 AND s.expires_at > now()"""
# last_seen_at (shown on the Settings page) is refreshed at most once a minute, not per request.
TOUCH_SESSION = "UPDATE web_sessions SET last_seen_at = now() WHERE id_hash = $1"
