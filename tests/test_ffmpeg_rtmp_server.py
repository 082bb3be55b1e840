"""The RTMP double's chunk parsing, checked with a hand-written client (no FFmpeg)."""

from __future__ import annotations

import asyncio
import struct

from rtmp_server import RtmpServer, amf_encode, encode_message

EXTENDED = 0x1000005  # past 0xFFFFFF: needs the extended-timestamp field


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x03" + bytes(1536))
    s0s1s2 = await reader.readexactly(1 + 1536 + 1536)
    writer.write(s0s1s2[1:1537])  # C2 echoes S1


def _command(*values: object, csid: int = 3, stream: int = 0) -> bytes:
    body = b"".join(amf_encode(v) for v in values)
    return encode_message(csid, 0, 20, stream, body, 128)


async def test_chunk_formats_extended_timestamps_and_chunk_size() -> None:
    async with RtmpServer() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            await _handshake(reader, writer)
            writer.write(_command("connect", 1, {"app": "live"}))
            writer.write(_command("createStream", 2, None))
            writer.write(_command("publish", 0, None, "good-key", "live", csid=8, stream=1))
            video = bytes([0x17, 1]) + bytes(298)
            # fmt 0 with an extended timestamp, split into 128-byte chunks (fmt 3 + ext ts)
            writer.write(encode_message(6, EXTENDED, 9, 1, video, 128))
            writer.write(encode_message(2, 0, 1, 0, struct.pack(">I", 4096), 128))
            # fmt 1 (delta, length, type), fmt 2 (delta only), fmt 3 (a new message, same delta)
            writer.write(
                bytes([0x40 | 6])
                + (40).to_bytes(3, "big")
                + len(video).to_bytes(3, "big")
                + b"\x09"
                + video
            )
            writer.write(bytes([0x80 | 6]) + (40).to_bytes(3, "big") + video)
            writer.write(bytes([0xC0 | 6]) + video)
            await writer.drain()
            ok = await server.wait_until(lambda: server.stats.video_messages == 4, 5)
            replies = await asyncio.wait_for(reader.read(65536), 5)
        finally:
            writer.close()
            await writer.wait_closed()
        assert ok, server.stats
        assert b"_result" in replies and b"NetStream.Publish.Start" in replies
        assert server.stats.publishes == 1 and server.sessions[0].key == "good-key"
        assert server.sessions[0].last_timestamp == EXTENDED + 120
