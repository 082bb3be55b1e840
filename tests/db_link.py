"""A TCP stand-in for the database's Unix socket that a test or bench can cut and restore.

The daemon under test is pointed at `127.0.0.1:port`; `sever()` aborts every open connection and
refuses new ones (a database cut off), `cut = False` lets connections through again. Used by
tests/test_conduits.py and bench/conduit.py."""

from __future__ import annotations

import asyncio


class DatabaseLink:
    def __init__(self, unix_path: str) -> None:
        self.unix_path, self.cut = unix_path, False
        self.open: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.sever()
        if self.server is not None:
            self.server.close()

    def sever(self) -> None:
        self.cut = True
        for writer in self.open:
            writer.transport.abort()
        self.open = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
        self.open += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
