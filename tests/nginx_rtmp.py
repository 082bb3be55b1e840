"""A real ingest for tests: nginx with the RTMP module (Debian: nginx + libnginx-mod-rtmp).

Started on 127.0.0.1 free ports with its configuration, logs and recordings in a test's folder,
as one process (`master_process off`) that `stop()` ends by its pid, failed test or not. Stream
keys are checked the way real ingests do: nginx asks an `on_publish` HTTP handler (a small
aiohttp app here) and closes the connection when it answers 403. `/stat` is nginx's own
statistics page (XML), read by `publishing()`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

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


class NginxRtmp:
    """nginx-rtmp on 127.0.0.1 accepting only `keys` (through on_publish)."""

    def __init__(self, folder: Path, keys: set[str], *, record: bool = True) -> None:
        self.dir, self.keys, self.record = folder, keys, record
        self.rtmp_port, self.stat_port, self.tls_port = _free_port(), _free_port(), _free_port()
        self.published: list[str] = []
        self.rejected: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._hook: web.AppRunner | None = None

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
        allowed = name in self.keys
        (self.published if allowed else self.rejected).append(name)
        return web.Response(status=200 if allowed else 403)

    async def start(self) -> None:
        (self.dir / "rec").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
            + ["-keyout", str(self.dir / "key.pem"), "-out", str(self.cert)]
            + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        app = web.Application()
        app.router.add_post("/on_publish", self._on_publish)
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
        reader, writer = await asyncio.open_connection("127.0.0.1", self.stat_port)
        writer.write(b"GET /stat HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        body = (await reader.read()).decode("utf-8", "replace")
        writer.close()
        streams = re.findall(r"<stream>\s*<name>([^<]*)</name>(.*?)</stream>", body, re.S)
        return [name for name, rest in streams if "<publishing/>" in rest]

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
