"""An RTMP ingest double, for what no real server can be made to do.

The multistream tests push to real nginx-rtmp (tests/nginx_rtmp.py). This double remains for two
behaviours of a broken ingest: `freeze()` (stop reading while keeping the connection open, so
FFmpeg's progress stalls) and `ResettingListener` (a reset during the RTMP handshake). It speaks
just enough RTMP (handshake, chunk streams, AMF0 commands) for FFmpeg to go live, and accepts
every stream key.

In-process::

    async with RtmpServer() as server:
        url = server.url_for("k1")          # rtmp://127.0.0.1:<port>/live/k1
        ...; server.freeze(); server.unfreeze()

As a subprocess (bench/multistream.py: the listener can then be killed for real)::

    python tests/rtmp_server.py --port N

prints one JSON object per line on stdout (``ready``, ``connect``, ``publish``, ``unpublish``,
``disconnect``, ``stopped``); SIGUSR1 freezes, SIGUSR2 thaws, SIGTERM/SIGINT stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# ---------------------------------------------------------------------------------------- AMF0


class _AmfObjectEnd(Exception):
    pass


def amf_decode(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """Decode one AMF0 value at pos; return (value, next position)."""
    marker = buf[pos]
    pos += 1
    if marker == 0x00:
        return struct.unpack_from(">d", buf, pos)[0], pos + 8
    if marker == 0x01:
        return buf[pos] != 0, pos + 1
    if marker == 0x02:
        (n,) = struct.unpack_from(">H", buf, pos)
        return buf[pos + 2 : pos + 2 + n].decode("utf-8", "replace"), pos + 2 + n
    if marker == 0x0C:
        (n,) = struct.unpack_from(">I", buf, pos)
        return buf[pos + 4 : pos + 4 + n].decode("utf-8", "replace"), pos + 4 + n
    if marker in (0x03, 0x08):
        if marker == 0x08:
            pos += 4  # ECMA array: approximate count, then properties as in an object
        return _amf_decode_props(buf, pos)
    if marker in (0x05, 0x06):
        return None, pos
    if marker == 0x0A:
        (n,) = struct.unpack_from(">I", buf, pos)
        items = []
        pos += 4
        for _ in range(n):
            item, pos = amf_decode(buf, pos)
            items.append(item)
        return items, pos
    if marker == 0x0B:
        return struct.unpack_from(">d", buf, pos)[0], pos + 10
    if marker == 0x09:
        raise _AmfObjectEnd
    raise ValueError(f"unsupported AMF0 marker 0x{marker:02x}")


def _amf_decode_props(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
    props: dict[str, Any] = {}
    while pos + 3 <= len(buf):
        (n,) = struct.unpack_from(">H", buf, pos)
        key = buf[pos + 2 : pos + 2 + n].decode("utf-8", "replace")
        pos += 2 + n
        if n == 0 and buf[pos] == 0x09:
            return props, pos + 1
        props[key], pos = amf_decode(buf, pos)
    return props, pos


def amf_decode_all(buf: bytes) -> list[Any]:
    """Decode every AMF0 value of a message body."""
    values, pos = [], 0
    while pos < len(buf):
        value, pos = amf_decode(buf, pos)
        values.append(value)
    return values


def amf_encode(value: Any) -> bytes:
    """Encode None, bool, number, str or dict as AMF0."""
    if value is None:
        return b"\x05"
    if isinstance(value, bool):
        return b"\x01" + bytes([value])
    if isinstance(value, (int, float)):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        return b"\x02" + struct.pack(">H", len(raw)) + raw
    if isinstance(value, dict):
        body = b"".join(
            struct.pack(">H", len(k.encode())) + k.encode() + amf_encode(v)
            for k, v in value.items()
        )
        return b"\x03" + body + b"\x00\x00\x09"
    raise TypeError(f"cannot AMF0-encode {type(value).__name__}")


# ---------------------------------------------------------------------------------------- FLV

FLV_AUDIO, FLV_VIDEO = 8, 9


def encode_message(
    csid: int, timestamp: int, type_id: int, stream_id: int, payload: bytes, chunk_size: int
) -> bytes:
    """Encode one RTMP message as a fmt-0 chunk followed by fmt-3 continuation chunks."""
    extended = timestamp >= 0xFFFFFF
    ts_field = 0xFFFFFF if extended else timestamp
    ext = struct.pack(">I", timestamp) if extended else b""
    out = [
        bytes([csid & 0x3F]),
        ts_field.to_bytes(3, "big"),
        len(payload).to_bytes(3, "big"),
        bytes([type_id]),
        struct.pack("<I", stream_id),
        ext,
    ]
    for off in range(0, max(len(payload), 1), chunk_size):
        if off:
            out.append(bytes([0xC0 | (csid & 0x3F)]) + ext)
        out.append(payload[off : off + chunk_size])
    return b"".join(out)


@dataclass
class _ChunkStream:
    timestamp: int = 0
    ts_field: int = 0
    extended: bool = False
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    buf: bytearray = field(default_factory=bytearray)
    in_progress: bool = False


# ------------------------------------------------------------------------------------- server


@dataclass
class RtmpStats:
    """Counters a test can assert on; they survive stop()/start()."""

    connections: int = 0
    publishes: int = 0
    bytes_received: int = 0
    video_messages: int = 0
    audio_messages: int = 0
    active_connections: int = 0


@dataclass
class PublishSession:
    """One accepted publish: which key, what arrived."""

    key: str
    started_at: float
    video_messages: int = 0
    audio_messages: int = 0
    last_timestamp: int = 0
    ended_at: float | None = None


class _Connection(asyncio.Protocol):
    """One client connection: bytes in via data_received, parsed by a coroutine."""

    OUT_CHUNK = 4096
    WINDOW = 2_500_000

    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._wake = asyncio.Event()
        self._closed = False
        self._in_chunk = 128
        self._streams: dict[int, _ChunkStream] = {}
        self._received = 0
        self._acked = 0
        self._ack_window = self.WINDOW
        self.session: PublishSession | None = None
        self.task: asyncio.Task[None] | None = None

    # asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._connected(self)
        if self.server.frozen:
            transport.pause_reading()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._received += len(data)
        self.server.stats.bytes_received += len(data)
        self._wake.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake.set()

    # reading ------------------------------------------------------------------------------------
    async def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._closed:
                raise EOFError
            self._wake.clear()
            await self._wake.wait()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def _run(self) -> None:
        try:
            await self._handshake()
            while True:
                await self._read_chunk()
        except (EOFError, ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a protocol bug must show up in the test output
            print(f"rtmp_server: connection error: {exc!r}", file=sys.stderr)
        finally:
            self.close()

    async def _handshake(self) -> None:
        c0c1 = await self._read(1 + 1536)
        s1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(1528)
        self._send(b"\x03" + s1 + c0c1[1:])
        await self._read(1536)  # C2: the echo of S1, not checked

    async def _read_chunk(self) -> None:
        first = (await self._read(1))[0]
        fmt, csid = first >> 6, first & 0x3F
        if csid == 0:
            csid = 64 + (await self._read(1))[0]
        elif csid == 1:
            b = await self._read(2)
            csid = 64 + b[0] + b[1] * 256
        st = self._streams.setdefault(csid, _ChunkStream())
        await self._read_message_header(fmt, st)
        if not st.in_progress:
            st.timestamp = st.ts_field if fmt == 0 else st.timestamp + st.ts_field
            st.buf = bytearray()
            st.in_progress = True
        st.buf += await self._read(min(self._in_chunk, st.length - len(st.buf)))
        if len(st.buf) >= st.length:
            st.in_progress = False
            self._on_message(st.type_id, st.stream_id, st.timestamp & 0xFFFFFFFF, bytes(st.buf))
        self._maybe_ack()

    async def _read_message_header(self, fmt: int, st: _ChunkStream) -> None:
        if fmt == 3:
            if st.extended:
                await self._read(4)  # repeated extended timestamp of a continuation chunk
            return
        size = (11, 7, 3)[fmt]
        h = await self._read(size)
        ts_field = int.from_bytes(h[0:3], "big")
        if fmt <= 1:
            st.length = int.from_bytes(h[3:6], "big")
            st.type_id = h[6]
        if fmt == 0:
            st.stream_id = struct.unpack_from("<I", h, 7)[0]
        st.extended = ts_field == 0xFFFFFF
        if st.extended:
            ts_field = struct.unpack(">I", await self._read(4))[0]
        st.ts_field = ts_field

    def _maybe_ack(self) -> None:
        if self._received - self._acked >= self._ack_window:
            self._acked = self._received
            self._send_message(2, 3, 0, struct.pack(">I", self._received & 0xFFFFFFFF))

    # messages -----------------------------------------------------------------------------------
    def _on_message(self, type_id: int, stream_id: int, ts: int, payload: bytes) -> None:
        if type_id == 1:
            self._in_chunk = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
        elif type_id == 5:
            self._ack_window = max(1, struct.unpack(">I", payload[:4])[0])
        elif type_id in (FLV_AUDIO, FLV_VIDEO):
            self._on_media(type_id, ts, payload)
        elif type_id in (17, 20):
            self._on_command(amf_decode_all(payload[1:] if type_id == 17 else payload))

    def _on_media(self, type_id: int, ts: int, payload: bytes) -> None:
        if self.session is None:
            return
        if type_id == FLV_VIDEO:
            self.server.stats.video_messages += 1
            self.session.video_messages += 1
        else:
            self.server.stats.audio_messages += 1
            self.session.audio_messages += 1
        self.session.last_timestamp = ts

    def _on_command(self, values: list[Any]) -> None:
        if len(values) < 2:
            return
        name, txn = values[0], values[1]
        if name == "connect":
            self._on_connect(txn)
        elif name == "createStream":
            self._send_command(3, 0, ["_result", txn, None, 1])
        elif name in ("releaseStream", "FCPublish"):
            self._send_command(3, 0, ["_result", txn, None, None])
        elif name == "publish":
            self._on_publish(str(values[3]) if len(values) > 3 else "")
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            self._end_session()

    def _on_connect(self, txn: Any) -> None:
        self._send_message(2, 5, 0, struct.pack(">I", self.WINDOW))
        self._send_message(2, 6, 0, struct.pack(">IB", self.WINDOW, 2))
        self._send_message(2, 1, 0, struct.pack(">I", self.OUT_CHUNK))
        self._send_command(
            3,
            0,
            [
                "_result",
                txn,
                {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31},
                {
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": 0,
                },
            ],
        )

    def _on_publish(self, name: str) -> None:
        key = name.split("?", 1)[0]
        self.server.stats.publishes += 1
        self.session = self.server._new_session(key)
        self._send_message(2, 4, 0, struct.pack(">HI", 0, 1))  # StreamBegin, stream 1
        status = {
            "level": "status",
            "code": "NetStream.Publish.Start",
            "description": f"Publishing {key}.",
        }
        self._send_command(5, 1, ["onStatus", 0, None, status])
        self.server.emit("publish", key=key)

    def _end_session(self) -> None:
        if self.session and self.session.ended_at is None:
            self.session.ended_at = time.monotonic()
            self.server.emit(
                "unpublish", key=self.session.key, video_messages=self.session.video_messages
            )

    # writing ------------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if self.transport and not self.transport.is_closing():
            self.transport.write(data)

    def _send_message(self, csid: int, type_id: int, stream_id: int, payload: bytes) -> None:
        chunk = 128 if type_id == 1 else self.OUT_CHUNK  # Set Chunk Size itself goes at 128
        self._send(encode_message(csid, 0, type_id, stream_id, payload, chunk))

    def _send_command(self, csid: int, stream_id: int, values: list[Any]) -> None:
        self._send_message(csid, 20, stream_id, b"".join(amf_encode(v) for v in values))

    def close(self) -> None:
        self._end_session()
        if self.transport and not self.transport.is_closing():
            self.transport.abort()
        self.server._disconnected(self)


class ResettingListener:
    """A listener that accepts, reads the client's first handshake bytes and resets (RST).

    What an overloaded or restarting ingest (or a middlebox) looks like: nginx cannot be made
    to do this on purpose, so this stays a double.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port, self.resets = host, port, 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._reset, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.read(1537), 5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        sock = writer.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.resets += 1
        writer.close()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()


class RtmpServer:
    """A minimal RTMP ingest on 127.0.0.1 that accepts every stream key and can freeze."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app: str = "live",
        rcvbuf: int | None = 65536,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.host, self.port, self.app = host, port, app
        # A small, fixed receive buffer makes freeze() bite within a second or two instead of
        # after the kernel has soaked up megabytes (it also turns off receive autotuning).
        self.rcvbuf = rcvbuf
        self.on_event = on_event
        self.stats = RtmpStats()
        self.sessions: list[PublishSession] = []
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    # lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> int:
        """Listen (again, on the same port after a stop) and return the port."""
        if self._server is not None:
            return self.port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        try:
            sock.bind((self.host, self.port))
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=sock)
        self.port = sock.getsockname()[1]
        self.emit("ready", port=self.port)
        return self.port

    async def stop(self) -> None:
        """Close the listening socket and every connection; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        tasks = [c.task for c in connections if c.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    close = stop

    async def __aenter__(self) -> RtmpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def listening(self) -> bool:
        return self._server is not None

    # behaviour ----------------------------------------------------------------------------------
    def freeze(self) -> None:
        """Stop reading from every socket (new ones too) while keeping them open."""
        self.frozen = True
        for conn in self._connections:
            if conn.transport and not conn.transport.is_closing():
                conn.transport.pause_reading()

    def unfreeze(self) -> None:
        """Resume reading from every socket."""
        self.frozen = False
        for conn in self._connections:
            if conn.transport and not conn.transport.is_closing():
                conn.transport.resume_reading()

    @property
    def url(self) -> str:
        return f"rtmp://{self.host}:{self.port}/{self.app}"

    def url_for(self, key: str) -> str:
        return f"{self.url}/{key}"

    def sessions_for(self, key: str) -> list[PublishSession]:
        return [s for s in self.sessions if s.key == key]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll predicate every 0.1 s; True as soon as it holds, False after timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    # bookkeeping --------------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        if self.on_event:
            self.on_event({"event": event, **fields})

    def _connected(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self.stats.connections += 1
        self.stats.active_connections = len(self._connections)
        self.emit("connect", connections=self.stats.connections)

    def _disconnected(self, conn: _Connection) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            self.stats.active_connections = len(self._connections)
            self.emit("disconnect")

    def _new_session(self, key: str) -> PublishSession:
        session = PublishSession(key=key, started_at=time.monotonic())
        self.sessions.append(session)
        return session


# ---------------------------------------------------------------------------------------- CLI


def _print_event(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


async def _serve(args: argparse.Namespace) -> None:
    server = RtmpServer(
        host=args.host,
        port=args.port,
        app=args.app,
        on_event=_print_event,
    )
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    loop.add_signal_handler(signal.SIGUSR1, server.freeze)
    loop.add_signal_handler(signal.SIGUSR2, server.unfreeze)
    await server.start()
    try:
        await done.wait()
    finally:
        await server.stop()
        _print_event({"event": "stopped", "stats": asdict(server.stats)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Minimal RTMP ingest for StreamerHub tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--app", default="live")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
