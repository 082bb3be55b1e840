"""Who is asking: encrypted session cookies, the user behind them, roles, CSRF, the setup link.

The cookie (aiohttp-session's EncryptedCookieStorage, Fernet) holds a random session id and the
CSRF token; the database keeps only the id's hash, so logout and password changes end sessions
for real. Cookies are HttpOnly and SameSite=Strict (aiohttp-session's default sends none).
"""

from __future__ import annotations

import functools
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_exceptions import NotAppKeyWarning
from aiohttp_session import Session, get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from streamerhub.config import Settings
from streamerhub.crypto import read_key_file, write_key_file
from streamerhub.errors import StreamerHubError
from streamerhub.log import get_logger, register_secret
from streamerhub.web.context import services
from streamerhub.web.security import (
    SAFE_METHODS,
    csrf_matches,
    new_csrf_token,
    presented_csrf,
    public_url,
    same_origin,
)
from streamerhub.web.users import SessionUser, User, UserStore

log = get_logger(__name__)
# aiohttp-session and aiohttp-jinja2 keep their state under plain string request keys; that is
# their API, not ours, so their one-time NotAppKeyWarning would only be noise in the daemon's log.
warnings.filterwarnings(
    "ignore",
    message="It is recommended to use web.RequestKey",
    category=NotAppKeyWarning,
    module="aiohttp_(session|jinja2)",
)

COOKIE = "streamerhub_session"
SESSION_KEY_FILE = "session.key"
SETUP_TOKEN_FILE = "setup-token"
API_TOKEN_FILE = "api-token"
VIEWER_API = "/api/v1/export"  # what a viewer's session may read through the API
CURRENT = web.RequestKey("web_current_user", object)  # SessionUser | None
PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CsrfRefused(web.HTTPForbidden):
    """A state-changing request without the page's CSRF token (or from another origin)."""


# ----------------------------------------------------------------------------- cookies


def load_session_key(data_dir: Path) -> bytes:
    """The cookie encryption key: DATA_DIR/session.key (0600), created on first start."""
    path = data_dir / SESSION_KEY_FILE
    if path.is_file():
        return read_key_file(path)
    key = secrets.token_bytes(32)
    write_key_file(path, key)
    return key


def session_storage(settings: Settings) -> EncryptedCookieStorage:
    url = public_url(settings) or ""
    return EncryptedCookieStorage(
        load_session_key(settings.data_dir),
        cookie_name=COOKIE,
        httponly=True,
        samesite="Strict",
        secure=url.startswith("https://") or None,
        max_age=settings.web.session_days * 86400,
    )


def session_middlewares(settings: Settings, inner: list[Middleware]) -> list[Middleware]:
    """Sessions, then `inner` (the error pages need the session), then the user and CSRF check."""
    return [session_middleware(session_storage(settings)), *inner, auth_middleware]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the signed-in user; refuse state-changing requests without a valid CSRF token.

    A request carrying `Authorization` is an API client (Bearer token): a browser cannot add that
    header to a cross-site request, and the API checks the token itself. Such a request stands on
    its header alone: the cookie's user is not taken, so `Authorization: Basic junk` next to the
    owner's cookie cannot skip the CSRF check and still act as the owner.
    """
    session = await get_session(request)
    api_client = "Authorization" in request.headers
    request[CURRENT] = None if api_client else await _session_user(request, session)
    if request.method not in SAFE_METHODS and not api_client:
        presented = await presented_csrf(request)
        if not same_origin(request) or not csrf_matches(session.get("csrf"), presented):
            log.warning("csrf_refused", path=request.path, method=request.method)
            raise CsrfRefused(
                text="This request was refused: it did not carry the page's "
                "security token. Reload the page and try again."
            )
    return await handler(request)


async def _session_user(request: web.Request, session: Session) -> SessionUser | None:
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None
    found = await UserStore(services(request).db).session_user(sid)
    if found is None:  # expired or logged out elsewhere: drop the stale id, keep the CSRF token
        session.pop("sid", None)
    return found


async def csrf_token(request: web.Request) -> str:
    """The session's CSRF token (created on first use) for forms and the page's fetch calls."""
    session = await get_session(request)
    if not session.get("csrf"):
        session["csrf"] = new_csrf_token()
    token: str = session["csrf"]  # aiohttp_session has no types: Any
    return token


async def sign_in(request: web.Request, user: User, method: str) -> None:
    """Start a fresh session (new cookie, new CSRF token: nothing carried over from before)."""
    store = UserStore(services(request).db)
    days = services(request).settings.web.session_days
    sid = await store.start_session(user, method, days, request.headers.get("User-Agent"))
    session = await new_session(request)
    session["sid"] = sid
    session["csrf"] = new_csrf_token()
    log.info("web_signed_in", login=user.login, role=user.role, method=method)


async def sign_out(request: web.Request) -> None:
    session = await get_session(request)
    sid = session.get("sid")
    if isinstance(sid, str):
        await UserStore(services(request).db).end_session(sid)
    session.invalidate()


async def flash(request: web.Request, text: str, kind: str = "ok") -> None:
    """A message shown once on the next page (after a redirect)."""
    session = await get_session(request)
    session["flash"] = {"kind": kind, "text": text}


async def take_flash(request: web.Request) -> dict[str, str] | None:
    session = await get_session(request)
    return session.pop("flash", None) if "flash" in session else None


def current(request: web.Request) -> SessionUser | None:
    return request.get(CURRENT)


# ----------------------------------------------------------------------------- roles


def wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return (
        request.path.startswith(("/api/", "/feed/"))
        or "application/json" in accept
        or "text/event-stream" in accept
        or request.headers.get("X-Requested-With") == "fetch"
    )


def require(role: str) -> Callable[[PageHandler], PageHandler]:
    """Page decorator: signed in (else to /login), and an owner when role == 'owner'."""

    def wrap(handler: PageHandler) -> PageHandler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            who = current(request)
            if who is None:
                if wants_json(request):
                    raise web.HTTPUnauthorized(text="Sign in first.")
                target = request.path_qs if request.method == "GET" else "/"
                raise web.HTTPSeeOther(f"/login?next={quote(target, safe='')}")
            if role == "owner" and not who.user.is_owner:
                raise web.HTTPForbidden(
                    text="Your account can look but not change anything "
                    "(viewer role). Ask the owner if you need more."
                )
            return await handler(request)

        return guarded

    return wrap


async def api_session_check(request: web.Request) -> SessionUser | None:
    """The dashboard-session path of the JSON API's auth check: None when not signed in.

    Viewers (read-only analytics) may only read analytics exports; multistream — targets,
    videos, jobs — is the owner's. The CSRF token was already checked by auth_middleware for every
    state-changing request that relies on the cookie.
    """
    who = current(request)
    if who is None or "Authorization" in request.headers:
        return None  # an API client stands on its token alone (and skipped the CSRF check)
    if not who.user.is_owner and (
        request.method not in SAFE_METHODS or not request.path.startswith(VIEWER_API)
    ):
        raise web.HTTPForbidden(
            text="Viewers can look at analytics but not change anything; "
            "the multistream API is for the owner."
        )
    return who


# ----------------------------------------------------------------------------- setup link


def setup_token(data_dir: Path) -> str:
    """The one-time setup token: kept (0600) until the owner is created, so it survives restarts."""
    path = data_dir / SETUP_TOKEN_FILE
    if path.is_file():
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
    token = secrets.token_urlsafe(32)
    write_secret_file(path, token)
    return token


def write_secret_file(path: Path, text: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def setup_token_matches(data_dir: Path, presented: str) -> bool:
    path = data_dir / SETUP_TOKEN_FILE
    try:
        expected = path.read_text().strip()
    except OSError:
        return False
    return bool(expected) and secrets.compare_digest(expected, presented)


def forget_setup_token(data_dir: Path) -> None:
    (data_dir / SETUP_TOKEN_FILE).unlink(missing_ok=True)


def dashboard_url(settings: Settings) -> str:
    url = public_url(settings)
    if url:
        return url
    host = settings.web.host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{settings.web.port}"


async def announce_setup_link(settings: Settings, store: UserStore) -> str | None:
    """On a start with no owner yet: print and log the one-time setup link (like Jupyter's)."""
    if await store.owner_exists():
        forget_setup_token(settings.data_dir)
        return None
    link = f"{dashboard_url(settings)}/setup/{setup_token(settings.data_dir)}"
    # The link is a password until used: printed for the person starting the daemon, never
    # logged (logs are shipped and read by others); the log only says where to find it.
    print(
        f"\n  StreamerHub is not set up yet. Open this link to choose the owner's password:\n"
        f"    {link}\n  (it works once; it is also in {settings.data_dir / SETUP_TOKEN_FILE})\n",
        file=sys.stderr,
        flush=True,
    )
    log.info("setup_link_printed", token_file=str(settings.data_dir / SETUP_TOKEN_FILE))
    return link


def api_token(data_dir: Path, create: bool = True) -> str:
    """The local admin token from DATA_DIR/api-token (0600), created on first use."""
    path = data_dir / API_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        raise StreamerHubError(
            f"cannot read the API token {path}: {exc.strerror} (run as the user the daemon runs as)"
        ) from None
    if len(token) < 32:
        if not create:
            raise StreamerHubError(
                f"no API token in {path}: start the daemon once, or run `streamerhub api-token`"
            )
        token = secrets.token_urlsafe(32)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
    os.chmod(path, 0o600)
    register_secret(token)
    return token
