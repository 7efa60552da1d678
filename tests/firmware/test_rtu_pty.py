"""The RTU core behind a pty, read and written by pymodbus's serial client as a gateway on RS-485.

The adapter here is the thinnest one possible (asyncio reader on the pty master, frames cut by
``request_length``), so what is tested is the core's framing, CRC, addressing and exceptions as a
real serial client sees them.
"""

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse

from firmware.modbus.bank import RegisterBank
from firmware.modbus.rtu import RtuServer, request_length
from tests._require import require
from tests.firmware.mp_driver import addresses, build


@contextlib.asynccontextmanager
async def rtu_on_pty(server: RtuServer) -> AsyncIterator[str]:
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    loop = asyncio.get_running_loop()
    buf = bytearray()

    def readable() -> None:
        buf.extend(os.read(master, 512))
        while (n := request_length(buf)) and len(buf) >= n > 0:
            reply = server.feed(bytes(buf[:n]))
            del buf[:n]
            if reply is not None:
                os.write(master, reply)
        if request_length(buf) < 0:  # unknown function: nothing else on this line, take it all
            reply = server.feed(bytes(buf))
            buf.clear()
            if reply is not None:
                os.write(master, reply)

    loop.add_reader(master, readable)
    try:
        yield os.ttyname(slave)
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


async def test_pymodbus_serial_client_reads_and_writes_over_a_pty() -> None:
    require(hasattr(os, "openpty"), "no pty support on this OS")
    bank, _ = build()
    _, in_w, _ = addresses()
    async with rtu_on_pty(RtuServer(3, bank)) as path:
        client = AsyncModbusSerialClient(path, baudrate=115200, timeout=1, retries=0)
        assert await client.connect()
        try:
            suns = await client.read_holding_registers(40000, count=4, device_id=3)
            assert not suns.isError()
            assert suns.registers == [0x5375, 0x6E53, 1, 66]

            done = await client.write_registers(in_w - 1, [1, 2500], device_id=3)
            assert not done.isError()
            assert bank.get(in_w - 1) == 1 and bank.get_signed(in_w) == 2500
            back = await client.read_input_registers(in_w, count=1, device_id=3)
            assert back.registers == [2500]

            refused = await client.write_register(in_w, 30000, device_id=3)
            assert isinstance(refused, ExceptionResponse) and refused.exception_code == 3
            assert bank.get_signed(in_w) == 2500

            read_only = await client.write_register(40000, 1, device_id=3)
            assert isinstance(read_only, ExceptionResponse) and read_only.exception_code == 2

            await client.write_register(in_w, 100, device_id=0, no_response_expected=True)
            for _ in range(100):  # broadcast: executed, never answered
                if bank.get_signed(in_w) == 100:
                    break
                await asyncio.sleep(0.01)
            assert bank.get_signed(in_w) == 100
        finally:
            client.close()


async def test_foreign_address_gets_silence_so_the_client_times_out() -> None:
    require(hasattr(os, "openpty"), "no pty support on this OS")
    async with rtu_on_pty(RtuServer(3, RegisterBank(40000, 10))) as path:
        client = AsyncModbusSerialClient(path, baudrate=115200, timeout=0.3, retries=0)
        assert await client.connect()
        try:
            mine = await client.read_holding_registers(40000, count=1, device_id=3)
            assert not mine.isError()
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(40000, count=1, device_id=4)
        finally:
            client.close()
