"""A real ingest for tests: nginx with the RTMP module (Debian: nginx + libnginx-mod-rtmp).

Started on 127.0.0.1 free ports with its configuration, logs and recordings in a test's folder,
as one process (`master_process off`) that `stop()` ends by its pid, failed test or not. Stream
keys are checked the way real ingests do: nginx asks an `on_publish` HTTP handler (a small
aiohttp app here) and closes the connection when it answers 403. `/stat` is nginx's own
statistics page (XML), read by `publishing()` and `streams()`.

It is the ingest of every multistream test; tests/rtmp_server.py is kept only for what no real
server can be made to do (a freeze that keeps the socket open, a reset during the handshake).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pytest
from aiohttp import web

MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")  # TLS in front (rtmps)


def nginx_available() -> bool:
    return shutil.which("nginx") is not None and MODULE.exists() and STREAM_MODULE.exists()


needs_nginx = pytest.mark.skipif(
    not nginx_available(), reason="nginx with libnginx-mod-rtmp is not installed (.ci/run does)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CONFIG = """
load_module {module};
load_module {stream_module};
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        on_connect http://127.0.0.1:{hook_port}/on_connect;
        application live {{
            live on;
            record {record};
            record_path {dir}/rec;
            record_unique on;
            on_publish http://127.0.0.1:{hook_port}/on_publish;
        }}
    }}
}}
stream {{
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        proxy_pass 127.0.0.1:{rtmp_port};
    }}
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{
        listen 127.0.0.1:{stat_port};
        location /stat {{ rtmp_stat all; }}
    }}
}}
"""


@functools.cache
def _certificate() -> tuple[Path, Path]:
    """One self-signed certificate for 127.0.0.1 per test process (an RSA key takes ~0.4 s)."""
    folder = Path(tempfile.mkdtemp(prefix="streamerhub-test-cert-"))
    atexit.register(shutil.rmtree, folder, True)
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert)]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return key, cert


@dataclass
class Stream:
    """One stream nginx is receiving now, from /stat."""

    name: str
    seconds: float  # media time of the last message received (the publisher's timestamp)
    bytes_in: int
    video: bool  # announced in the stream's metadata
    audio: bool


class NginxRtmp:
    """nginx-rtmp on 127.0.0.1 accepting only `keys` (through on_publish; None: every key).

    `folder` None: a temporary one, removed when the `async with` block ends. `stop()` then
    `start()` brings it back on the same ports (an ingest that went away and came back).
    """

    def __init__(
        self,
        folder: Path | None = None,
        keys: Iterable[str] | None = None,
        *,
        record: bool = True,
        rtmp_port: int | None = None,
    ) -> None:
        self._own_dir = folder is None
        self.dir = folder or Path(tempfile.mkdtemp(prefix="streamerhub-test-nginx-"))
        self.keys = set(keys) if keys is not None else None
        self.record = record
        self.rtmp_port = rtmp_port or _free_port()
        self.stat_port, self.tls_port = _free_port(), _free_port()
        self.published: list[str] = []
        self.rejected: list[str] = []
        self.connections = 0  # RTMP `connect`s seen, rejected or not
        self.proc: subprocess.Popen[bytes] | None = None
        self._hook: web.AppRunner | None = None

    async def __aenter__(self) -> NginxRtmp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url_for(self, key: str) -> str:
        return f"{self.url}/{key}"

    def recordings(self, key: str) -> list[Path]:
        """The FLV files nginx recorded for this stream key, one per publish, oldest first."""
        return sorted((self.dir / "rec").glob(f"{key}-*.flv"), key=lambda p: p.stat().st_mtime)

    @property
    def url(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live"

    @property
    def tls_url(self) -> str:
        """rtmps:// through nginx's TLS, with a self-signed certificate (`cert` is its CA)."""
        return f"rtmps://127.0.0.1:{self.tls_port}/live"

    @property
    def cert(self) -> Path:
        return self.dir / "cert.pem"

    async def _on_publish(self, request: web.Request) -> web.Response:
        name = str((await request.post()).get("name", ""))
        allowed = self.keys is None or name in self.keys
        (self.published if allowed else self.rejected).append(name)
        return web.Response(status=200 if allowed else 403)

    async def _on_connect(self, request: web.Request) -> web.Response:
        self.connections += 1
        return web.Response()

    async def start(self) -> None:
        (self.dir / "rec").mkdir(parents=True, exist_ok=True)
        key, cert = _certificate()
        shutil.copyfile(key, self.dir / "key.pem")
        shutil.copyfile(cert, self.cert)
        app = web.Application()
        app.router.add_post("/on_publish", self._on_publish)
        app.router.add_post("/on_connect", self._on_connect)
        self._hook = web.AppRunner(app, access_log=None)
        await self._hook.setup()
        site = web.TCPSite(self._hook, "127.0.0.1", 0)
        await site.start()
        hook_port = self._hook.addresses[0][1]
        conf = self.dir / "nginx.conf"
        conf.write_text(
            CONFIG.format(
                module=MODULE,
                stream_module=STREAM_MODULE,
                record="all" if self.record else "off",
                tls_port=self.tls_port,
                dir=self.dir,
                rtmp_port=self.rtmp_port,
                hook_port=hook_port,
                stat_port=self.stat_port,
            )
        )
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await self._wait_listening()

    async def _wait_listening(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.error_log()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.rtmp_port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise AssertionError(f"nginx did not listen within {timeout} s: {self.error_log()}")

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    async def publishing(self) -> list[str]:
        """Names of the streams nginx is receiving now, from its /stat page."""
        return [stream.name for stream in await self.streams()]

    async def streams(self) -> list[Stream]:
        """The streams being published now, with what nginx received of each (/stat)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.stat_port)
        writer.write(b"GET /stat HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        body = (await reader.read()).decode("utf-8", "replace")
        writer.close()
        found = re.findall(r"<stream>\s*<name>([^<]*)</name>(.*?)</stream>", body, re.S)
        return [
            Stream(
                name,
                int(_field(rest, "timestamp")) / 1000,
                int(_field(rest, "bytes_in")),
                "<meta><video>" in rest,
                "<audio><codec>" in rest,
            )
            for name, rest in found
            if "<publishing/>" in rest
        ]

    async def wait_receiving(self, key: str, seconds: float, timeout: float = 15) -> Stream:
        """Wait until nginx has received `seconds` of media with video and audio for `key`."""
        deadline = time.monotonic() + timeout
        while True:
            streams = {stream.name: stream for stream in await self.streams()}
            stream = streams.get(key)
            if stream and stream.seconds >= seconds and stream.video and stream.audio:
                return stream
            assert time.monotonic() < deadline, f"{key}: {stream} after {timeout} s"
            await asyncio.sleep(0.2)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll predicate every 0.1 s; True as soon as it holds, False after timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def stop(self) -> None:
        """Stop nginx by its pid (SIGTERM, then SIGKILL) and the on_publish handler."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 5)
        if self._hook is not None:
            await self._hook.cleanup()
            self._hook = None


def _field(xml: str, name: str) -> str:
    found = re.search(rf"<{name}>([^<]*)</{name}>", xml)
    return found.group(1) if found else "0"
