"""The firmware as a network device on real MicroPython (the unix port, ``firmware/unix.py``):
each role in its own process serving Modbus TCP on loopback and RTU on a pty, driven by
pymodbus and the gateway's own bus. A ``MemoryError`` while serving costs only the client it
struck, and a client gone quiet is closed, so neither leaves the board short of connections.

tests/hil runs the conformance suite against the same processes (setpoints, reversion).
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse

from gateway.devices import ModbusTcpBus
from protocols.sunspec.devices import ROLE_MODELS, SUNSPEC_BASE
from tests.firmware.unix_device import UnixDevice, unix_device

pytestmark = pytest.mark.micropython_unix

ROLES = tuple(ROLE_MODELS)
_SUNS = [0x5375, 0x6E53]
_SN = 50  # model 1's SN, registers after its header
_MAX_CLIENTS = 6


def _request(tid: int) -> bytes:
    """An MBAP read of the SunSpec marker and model 1's header."""
    return struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, SUNSPEC_BASE, 4)


def _answered(sock: socket.socket, tid: int) -> bool:
    """Send one read on ``sock``: True if the board answered it, False if it closed instead."""
    try:
        sock.sendall(_request(tid))
        reply = sock.recv(64)
    except OSError:
        return False
    return reply[:2] == struct.pack(">H", tid) and len(reply) == 17


def _connect(dev: UnixDevice) -> socket.socket:
    return socket.create_connection(("127.0.0.1", dev.port), timeout=5)


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_serves_its_sunspec_chain_over_tcp_on_micropython(
        role: str, tmp_path: Path) -> None:
    with unix_device(role, tmp_path) as dev:
        client = AsyncModbusTcpClient("127.0.0.1", port=dev.port, timeout=2, retries=0)
        assert await client.connect()
        try:
            suns = await client.read_holding_registers(SUNSPEC_BASE, count=2, device_id=1)
            assert suns.registers == _SUNS
            chain, address = [], SUNSPEC_BASE + 2
            while True:
                header = await client.read_holding_registers(address, count=2, device_id=1)
                model_id, length = header.registers
                if model_id == 0xFFFF:
                    break
                chain.append(model_id)
                address += 2 + length
            common = await client.read_holding_registers(SUNSPEC_BASE + 2, count=68, device_id=1)
        finally:
            client.close()
    expected = ROLE_MODELS[role] + (() if 64210 in ROLE_MODELS[role] else (64210,))
    assert tuple(chain) == expected
    serial = struct.pack(">16H", *common.registers[_SN:_SN + 16]).rstrip(b"\0")
    assert serial == f"mpy-{role}".encode()


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_answers_rtu_on_a_pty_on_micropython(role: str, tmp_path: Path) -> None:
    with unix_device(role, tmp_path, rtu=True, unit=7) as dev:
        assert dev.serial is not None
        client = AsyncModbusSerialClient(dev.serial, baudrate=115200, timeout=1, retries=0)
        assert await client.connect()
        try:
            head = await client.read_holding_registers(SUNSPEC_BASE, count=4, device_id=7)
            assert head.registers == _SUNS + [1, 66]
            refused = await client.write_register(SUNSPEC_BASE, 1, device_id=7)
            assert isinstance(refused, ExceptionResponse) and refused.exception_code == 2
            with pytest.raises(ModbusIOException):  # another unit's frame: silence
                await client.read_holding_registers(SUNSPEC_BASE, count=1, device_id=8)
            again = await client.read_holding_registers(SUNSPEC_BASE, count=2, device_id=7)
            assert again.registers == _SUNS
        finally:
            client.close()


def test_memory_errors_while_serving_give_every_connection_slot_back(tmp_path: Path) -> None:
    # 8 kB of heap left free: half the clients of a burst meet MemoryError as they are accepted,
    # the others in their buffers or reads. The board must keep accepting, count no slot without
    # a client, and once the squeeze is over serve six clients again.
    with unix_device("battery", tmp_path, heap="256K", free=8_000, status_s=0.1) as dev:
        for _ in range(10):
            clients = [_connect(dev) for _ in range(_MAX_CLIENTS)]
            for tid, sock in enumerate(clients):
                _answered(sock, tid)
            for sock in clients:
                sock.close()
        squeezed = dev.status_when(lambda s: s.open == 0)
        assert squeezed.starved > 0, "the squeeze must have provoked MemoryError"

        dev.end_squeeze()
        clients = [_connect(dev) for _ in range(_MAX_CLIENTS + 1)]
        try:
            answered = [_answered(sock, tid) for tid, sock in enumerate(clients)]
            assert answered == [True] * _MAX_CLIENTS + [False]  # all six slots, and no seventh
            full = dev.status_when(lambda s: s.open == _MAX_CLIENTS)
            assert full.refused == squeezed.refused + 1
        finally:
            for sock in clients:
                sock.close()
        assert dev.status_when(lambda s: s.open == 0).served == squeezed.served + _MAX_CLIENTS


def test_clients_gone_quiet_are_closed_after_the_idle_time_and_others_served(
        tmp_path: Path) -> None:
    # Six clients that asked once and went silent stand for six half-open connections (a
    # gateway's Wi-Fi or power dropped): from the board's side nothing tells them apart.
    with unix_device("meter", tmp_path, idle_s=1.5, status_s=0.1) as dev:
        quiet = [_connect(dev) for _ in range(_MAX_CLIENTS)]
        try:
            assert all(_answered(sock, tid) for tid, sock in enumerate(quiet))
            with _connect(dev) as locked_out:
                assert not _answered(locked_out, 99)
            assert dev.status_when(lambda s: s.expired == _MAX_CLIENTS).open == 0
            for sock in quiet:
                assert sock.recv(64) == b"", "the board closed the idle connection"
            with _connect(dev) as newcomer:
                assert _answered(newcomer, 100)
        finally:
            for sock in quiet:
                sock.close()


def test_a_client_that_keeps_asking_is_never_closed_for_idleness(tmp_path: Path) -> None:
    with unix_device("meter", tmp_path, idle_s=2.5, status_s=0.1) as dev, _connect(dev) as sock:
        started = time.monotonic()
        tid = 0
        while time.monotonic() - started < 5:
            assert _answered(sock, tid), f"closed after {time.monotonic() - started:.1f} s"
            tid += 1
            time.sleep(0.2)
        assert dev.next_status().expired == 0


async def test_the_gateway_bus_reconnects_after_the_board_closed_it_idle(tmp_path: Path) -> None:
    with unix_device("meter", tmp_path, idle_s=1, status_s=0.1) as dev:
        async with ModbusTcpBus(host="127.0.0.1", port=dev.port, timeout_s=1.0) as bus:
            assert await bus.read_registers(unit=1, address=SUNSPEC_BASE, count=2) == (
                0x5375, 0x6E53)
            dev.status_when(lambda s: s.expired == 1)
            assert await bus.read_registers(unit=1, address=SUNSPEC_BASE, count=2) == (
                0x5375, 0x6E53)
            assert bus.stats.connects == 2 and bus.stats.failures == 0
