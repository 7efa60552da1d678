"""A TCP proxy a test can sever and restore: one gateway's road to the broker.

Severing aborts every proxied connection (both ends see a reset, as when a home's uplink dies)
and refuses new ones until :meth:`TcpProxy.restore`; the listening port stays the same, so the
gateway's reconnect loop finds its way back by itself.

Holding (:meth:`TcpProxy.hold`) keeps back what the broker sends the gateway, whole MQTT
packets, and :meth:`TcpProxy.release` sends it on, in order: every packet (the link stalls, as
for a starved host that reads its socket late: its publishes wait for their acknowledgements), or
only the PUBLISH packets whose topic a test picks (those messages arrive late, everything else
flows). Holding reads the stream as MQTT packets, which a TLS stream does not allow: a proxy
made with ``packets=False`` passes bytes through as they come, for a gateway on ``mqtts://``, and
cannot hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Self

_PUBLISH = 3


class TcpProxy:
    """``async with TcpProxy(target=(host, port)) as proxy:`` — listen on ``proxy.port``."""

    def __init__(self, *, target: tuple[str, int], host: str = "127.0.0.1",
                 packets: bool = True) -> None:
        self._target = target
        self._host = host
        self._packets = packets
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.severed = False
        self.port = 0
        self.refused = 0
        self._holds: Callable[[bytes], bool] | None = None
        self._held: list[tuple[asyncio.StreamWriter, bytes]] = []
        self.held = 0
        """Packets kept back so far."""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self._host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
        self.sever()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def sever(self) -> None:
        """Cut every connection now and refuse new ones."""
        self.severed = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.severed = False

    def hold(self, topics: Callable[[str], bool] | None = None) -> None:
        """Keep back, from now on, every packet the broker sends the gateway, or (``topics``)
        only the PUBLISH packets whose topic it picks."""
        if not self._packets:
            raise RuntimeError("a proxy with packets=False passes bytes through: it cannot hold")
        if topics is None:
            self._holds = lambda _packet: True
        else:
            self._holds = lambda packet: packet[0] >> 4 == _PUBLISH and topics(_topic(packet))

    def release(self) -> None:
        """Stop holding and send on what was held, in the order the broker sent it."""
        self._holds = None
        held, self._held = self._held, []
        for writer, packet in held:
            if not writer.transport.is_closing():
                writer.write(packet)

    def _down(self, writer: asyncio.StreamWriter, packet: bytes) -> None:
        """One whole MQTT packet from the broker to the gateway: held or passed on."""
        holds = self._holds
        if holds is not None and holds(packet):
            self._held.append((writer, packet))
            self.held += 1
        else:
            writer.write(packet)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.severed:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        down = (_pipe_packets(up_reader, writer, self._down) if self._packets
                else _pipe(up_reader, writer))
        pipes = [asyncio.create_task(_pipe(reader, up_writer)), asyncio.create_task(down)]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


async def _pipe_packets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        deliver: Callable[[asyncio.StreamWriter, bytes], None]) -> None:
    """Like :func:`_pipe`, one whole MQTT packet at a time (fixed header, then the remaining
    length as a variable byte integer, then that many bytes)."""
    with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
        while True:
            header = await reader.readexactly(1)
            length, multiplier, size = 0, 1, b""
            while True:
                byte = await reader.readexactly(1)
                size += byte
                length += (byte[0] & 0x7F) * multiplier
                multiplier *= 128
                if not byte[0] & 0x80:
                    break
            deliver(writer, header + size + await reader.readexactly(length))
            await writer.drain()


def _topic(packet: bytes) -> str:
    """The topic of a PUBLISH packet: after the fixed header, a two-byte length and the name."""
    at = 1
    while packet[at] & 0x80:
        at += 1
    at += 1
    size = int.from_bytes(packet[at:at + 2], "big")
    return packet[at + 2:at + 2 + size].decode("utf-8", "replace")
