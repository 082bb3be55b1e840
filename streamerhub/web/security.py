"""Request guards: allowed Host names (DNS rebinding), CSRF tokens, browser security headers,
and the slow-down applied to repeated failed logins."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web
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
        "img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


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
        raise
    if not response.prepared:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
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
    """Each failure for a client or a login delays that key's next attempts: 3 free, then
    1, 2, 4 … s up to `cap`; forgotten after `window` s without failures or on success."""

    def __init__(
        self,
        free: int = 3,
        cap: float = 30.0,
        window: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.cap, self.window, self.clock = free, cap, window, clock
        self._failures: dict[str, tuple[int, float]] = {}

    def delay(self, keys: Iterable[str]) -> float:
        now = self.clock()
        worst = 0
        for key in keys:
            count, last = self._failures.get(key, (0, now))
            if now - last > self.window:
                self._failures.pop(key, None)
                continue
            worst = max(worst, count)
        return 0.0 if worst < self.free else min(self.cap, 2.0 ** (worst - self.free))

    def failed(self, keys: Iterable[str]) -> None:
        now = self.clock()
        for key in keys:
            count, _ = self._failures.get(key, (0, now))
            self._failures[key] = (count + 1, now)
        if len(self._failures) > 10_000:  # a flood of made-up logins must not eat memory
            oldest = sorted(self._failures, key=lambda k: self._failures[k][1])[:5_000]
            for key in oldest:
                del self._failures[key]

    def succeeded(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)
