"""Thin asyncio adapters: serve a RegisterBank over Modbus TCP and over Modbus RTU on a pty.

All Modbus logic lives in the firmware's sans-I/O core (``firmware/modbus``); these adapters only
move bytes, one ``TcpServer`` per TCP connection (each connection has its own partial-ADU
buffer, as on the board), one ``RtuServer`` per pty. Each reply passes through the device's
``FaultInjector`` when it has faults, which may drop, corrupt or delay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import AsyncIterator, Callable

from firmware.modbus.bank import RegisterBank
from firmware.modbus.rtu import RtuServer, request_length
from firmware.modbus.tcp import TcpServer
from sim_devices.faults import FaultInjector, FaultSpec

_MBAP = 7
_RTU_GAP_S = 0.01
"""Silence that ends an RTU frame whose length the function code does not give. A pty has no
baud rate, so this stands in for the standard's 3.5 character times."""


def _split_adus(replies: bytes) -> list[bytes]:
    """Cut concatenated Modbus TCP replies into one bytes object per ADU (by MBAP length)."""
    out = []
    while replies:
        n = 6 + ((replies[4] << 8) | replies[5])
        out.append(replies[:n])
        replies = replies[n:]
    return out


@contextlib.asynccontextmanager
async def serve_tcp(bank: RegisterBank, *, host: str = "127.0.0.1", port: int = 0,
                    unit: int | None = None, faults: FaultSpec | None = None,
                    seed: int | str = 0, clock: Callable[[], float] = lambda: 0.0,
                    ) -> AsyncIterator[tuple[str, int]]:
    """Serve ``bank`` over Modbus TCP; yields the ``(host, port)`` actually bound (port 0 = any).

    ``clock`` gives simulated seconds for the faults' offline windows.
    """
    injector = FaultInjector(faults, seed=seed) if faults else None
    connections: set[asyncio.Task[None]] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            connections.add(task)
        core = TcpServer(bank, unit)
        try:
            while not core.closed:
                data = await reader.read(4096)
                if not data:
                    break
                for reply in _split_adus(core.feed(data)):
                    await _send(writer, reply, injector, clock, keep_prefix=_MBAP)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                connections.discard(task)

    server = await asyncio.start_server(connection, host, port)
    bound = server.sockets[0].getsockname()
    try:
        yield bound[0], bound[1]
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        if connections:
            await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()


async def _send(writer: asyncio.StreamWriter, reply: bytes, injector: FaultInjector | None,
                clock: Callable[[], float], *, keep_prefix: int) -> None:
    if injector is not None:
        fault = injector.decide(reply, now_s=clock(), keep_prefix=keep_prefix)
        if fault.data is None:
            return
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        reply = fault.data
    writer.write(reply)
    await writer.drain()


@contextlib.asynccontextmanager
async def serve_rtu_pty(bank: RegisterBank, *, unit: int = 1, faults: FaultSpec | None = None,
                        seed: int | str = 0, clock: Callable[[], float] = lambda: 0.0,
                        ) -> AsyncIterator[str]:
    """Serve ``bank`` as RTU unit ``unit`` on a new pty; yields the path a client opens.

    Frames are cut by the function code's length when it gives one, else by a gap of silence.
    """
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    path = os.ttyname(slave)
    loop = asyncio.get_running_loop()
    core = RtuServer(unit, bank)
    injector = FaultInjector(faults, seed=seed) if faults else None
    buf = bytearray()
    gap: asyncio.TimerHandle | None = None
    pending: set[asyncio.Task[None]] = set()

    def answer(frame: bytes) -> None:
        reply = core.feed(frame)
        if reply is None:
            return
        if injector is None:
            os.write(master, reply)
            return
        fault = injector.decide(reply, now_s=clock())
        if fault.data is None:
            return
        if not fault.delay_s:
            os.write(master, fault.data)
            return
        task = loop.create_task(_write_later(master, fault.data, fault.delay_s))
        pending.add(task)
        task.add_done_callback(pending.discard)

    def on_gap() -> None:
        nonlocal gap
        gap = None
        if buf:
            frame = bytes(buf)
            buf.clear()
            answer(frame)

    def on_readable() -> None:
        nonlocal gap
        try:
            buf.extend(os.read(master, 512))
        except OSError:  # the client closed its end; wait for the next open
            return
        while True:
            n = request_length(buf)
            if n <= 0 or len(buf) < n:
                break
            frame = bytes(buf[:n])
            del buf[:n]
            answer(frame)
        if gap is not None:
            gap.cancel()
        gap = loop.call_later(_RTU_GAP_S, on_gap) if buf else None

    loop.add_reader(master, on_readable)
    try:
        yield path
    finally:
        loop.remove_reader(master)
        if gap is not None:
            gap.cancel()
        for task in list(pending):
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        os.close(master)
        os.close(slave)


async def _write_later(fd: int, data: bytes, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    os.write(fd, data)
