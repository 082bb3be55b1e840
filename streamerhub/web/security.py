"""Request guards: allowed Host names (DNS rebinding), CSRF tokens, browser security headers,
and the slow-down applied to repeated failed logins."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import secrets
import time
from typing import AsyncIterator, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from streamerhub.config import Settings

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")

# script-src 'self' keeps every script a file we ship; uPlot styles elements through the CSSOM,
# which CSP does not restrict. Referrer-Policy same-origin keeps the setup token out of Referer
# headers sent elsewhere; no-referrer would also make Chromium send `Origin: null` on our own
# form posts, which the Origin check then (rightly) refuses.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        # Twitch's image CDN: linked accounts' avatars (the only outside images shown).
        "img-src 'self' data: https://static-cdn.jtvnw.net; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

# Pages, API answers and exports can show a signed-in user's data: no shared or back-button cache
# may keep them (static files are the only cacheable answers).
NO_STORE = "no-store"


def public_url(settings: Settings) -> str | None:
    """[web] public_url without a trailing slash, or None when the dashboard is reached directly."""
    value = settings.web.public_url
    return value.rstrip("/") if value else None


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """Host names a request may name: loopback, the bind address, [web] allowed_hosts and
    public_url."""
    names = {*LOCAL_HOSTS, *(h.strip().lower() for h in settings.web.allowed_hosts)}
    bind = settings.web.host.lower()
    if bind not in WILDCARD_BINDS:
        names.add(f"[{bind}]" if ":" in bind else bind)
    url = public_url(settings)
    if url:
        names.add((urlsplit(url).hostname or "").lower())
    return frozenset(n for n in names if n)


def host_name(host_header: str) -> str:
    """'Example.com:8080' → 'example.com'; '[::1]:8080' → '[::1]'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_middleware(allowed: Iterable[str]) -> Middleware:
    """Refuse requests naming a host we do not serve: a rebound DNS name cannot reach us."""
    names = frozenset(allowed)

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = host_name(request.headers.get("Host", ""))
        if name not in names:
            return web.Response(
                status=421,
                content_type="text/plain",
                text=(
                    f"StreamerHub does not answer to the host name {name or '(none)'!r}. If you "
                    "reach the dashboard by this name, add it to [web] allowed_hosts in "
                    "config.toml."
                ),
            )
        return await handler(request)

    return check_host


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer, errors included, and the server time it took
    (`Server-Timing: app;dur=…`, shown by browsers' developer tools; bench/web.py reads it)."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        exc.headers.setdefault("Cache-Control", NO_STORE)
        raise
    if not response.prepared:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", NO_STORE)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


async def presented_csrf(request: web.Request) -> str:
    """The token a request carries: the header (fetch, uploads) or the form field (forms).

    A multipart body is never parsed here: that would buffer a whole video upload in memory.
    """
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()  # aiohttp caches it: the handler reads the same form
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def csrf_matches(expected: str | None, presented: str) -> bool:
    if not expected:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def same_origin(request: web.Request) -> bool:
    """A browser's Origin header, when present, must name this very host."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc.lower() == request.host.lower()


class LoginThrottle:
    """Each failure for a client or a login delays that key's next attempts: `free` free, then
    base × 1, 2, 4 … s up to `cap`; forgotten after `window` s without failures or on success.

    Attempts are serialised per client and per login (the delay is waited holding both queues),
    so parallel requests cannot all slip through before the first failure is counted. A client
    that signed in to a login before skips that login's queue and the global ceiling, so others'
    failures cannot lock the owner out of their usual client. Past `ceiling` failures within the
    window across all keys, every other attempt waits the full `cap`.
    """

    def __init__(
        self,
        free: int = 3,
        cap: float = 30.0,
        window: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        base: float = 1.0,
        ceiling: int = 200,
    ) -> None:
        self.free, self.cap, self.window, self.clock = free, cap, window, clock
        self.base, self.ceiling = base, ceiling
        self._failures: dict[str, tuple[int, float]] = {}
        self._recent: collections.deque[float] = collections.deque()
        self._trusted: dict[tuple[str, str], float] = {}
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def attempt(self, client: str, login: str) -> AsyncIterator[float]:
        """Queue behind earlier attempts of this client and login, wait the delay; yields it."""
        trusted = (client, login) in self._trusted
        keys = [f"ip:{client}"] + ([] if trusted else [f"login:{login}"])
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(keys):  # one order everywhere: no two attempts deadlock
                await stack.enter_async_context(self._queue(key))
            wait = self.delay(keys)
            if not trusted and self._over_ceiling():
                wait = self.cap
            if wait:
                await asyncio.sleep(wait)
            yield wait

    @contextlib.asynccontextmanager
    async def _queue(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def _over_ceiling(self) -> bool:
        horizon = self.clock() - self.window
        while self._recent and self._recent[0] < horizon:
            self._recent.popleft()
        return len(self._recent) >= self.ceiling

    def delay(self, keys: Iterable[str]) -> float:
        now = self.clock()
        worst = 0
        for key in keys:
            count, last = self._failures.get(key, (0, now))
            if now - last > self.window:
                self._failures.pop(key, None)
                continue
            worst = max(worst, count)
        if worst < self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(worst - self.free, 32))

    def failed(self, client: str, login: str) -> None:
        now = self.clock()
        self._recent.append(now)
        for key in (f"ip:{client}", f"login:{login}"):
            count, _ = self._failures.get(key, (0, now))
            self._failures[key] = (count + 1, now)
        if len(self._failures) > 10_000:  # a flood of made-up logins must not eat memory
            oldest = sorted(self._failures, key=lambda k: self._failures[k][1])[:5_000]
            for key in oldest:
                del self._failures[key]

    def succeeded(self, client: str, login: str) -> None:
        self._failures.pop(f"ip:{client}", None)
        self._failures.pop(f"login:{login}", None)
        self._trusted[(client, login)] = self.clock()
        if len(self._trusted) > 1_000:
            oldest = sorted(self._trusted, key=lambda k: self._trusted[k])[:500]
            for pair in oldest:
                del self._trusted[pair]


def client_address(request: web.Request, behind_proxy: bool) -> str:
    """Who is asking, for the sign-in throttle. Behind a reverse proxy on this machine ([web]
    public_url set, the peer a loopback address) every request comes from the proxy, so the
    address the proxy appended to X-Forwarded-For (its last entry) names the client; a client
    cannot forge that entry, only the ones before it."""
    peer = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if behind_proxy and forwarded and peer in ("127.0.0.1", "::1"):
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return peer


class QuietBadRequests(logging.Filter):
    """aiohttp logs every malformed request (bad request line, header, chunking) at error level
    with a traceback: anyone could fill the log with them. They are the client's mistake and
    aiohttp already answered 400, so they become one info line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "http_bad_request: %s", (str(exc.message)[:200],)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_bad_requests() -> None:
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietBadRequests) for f in server.filters):
        server.addFilter(QuietBadRequests())
