"""A TCP relay that passes bytes through as they come, so it carries TLS as well as plain MQTT,
and that a test can sever (every connection reset, new ones refused) and restore.

:class:`tests.faults.proxy.TcpProxy` reads the broker's side as MQTT packets to hold some back,
which a TLS stream does not let it do; this one is for a gateway on ``mqtts://``.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self


class RawProxy:
    """``async with RawProxy(target=(host, port)) as proxy:`` — listen on ``proxy.port``."""

    def __init__(self, *, target: tuple[str, int]) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.severed = False
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
        self.sever()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def sever(self) -> None:
        """Reset every connection now and refuse new ones until :meth:`restore`."""
        self.severed = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.severed = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.severed:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.transport.abort()
