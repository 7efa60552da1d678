"""The ESP32 board HAL (firmware/hal/board.py) on real MicroPython: the WebAssembly port with a
recording ``machine`` module (tests/firmware/fake_machine.py) in its filesystem. ``main.start``
picks the HAL up as on the board; the test checks the RS-485 driver-enable pin is high exactly
around each reply frame and that the metering IC is read at the right registers over SPI."""

import ast
import struct
from pathlib import Path

from firmware.modbus.rtu import crc16
from protocols.metering import VerifiedReading, verify_reading
from tests.firmware import frames
from tests.firmware.test_metering import run_micropython

FAKE_MACHINE = Path(__file__).with_name("fake_machine.py")
DE, CS = 4, 5
IRMS, URMS, PMEAN, FREQ, APENERGY, ANENERGY = 0x48, 0x49, 0x4A, 0x4C, 0x40, 0x41

SCRIPT = """
import asyncio, json
with open('/machine.py', 'w') as f:
    f.write(FAKE)
import machine
machine.REGS.update({0x48: 4350, 0x49: 23012, 0x4A: (-1000) & 0xFFFF, 0x4C: 5001,
                     0x40: 0, 0x41: 3200})
with open('/config.json', 'w') as f:
    f.write(json.dumps({"device_id": "esp-1", "role": "meter", "unit": 7, "baud": 19200,
                        "tcp_port": 502, "key": "00" * 32}))
import main
dev, tasks, server = await main.start(config_path='/config.json', seq_path='/seq', tcp=False)
print('HAL', type(dev.hal).__name__, dev.error)
uart = machine.UARTS[0]
print('UART', uart.id, sorted(uart.config.items()))
boot = len(machine.LOG)
for request in REQUESTS:
    before = len(machine.LOG)
    uart.inject(bytes.fromhex(request))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if any(e[0] == 'flush' for e in machine.LOG[before:]):
            break
for t in tasks:
    t.cancel()
await asyncio.sleep(0.01)
print('BOOT', boot)
for event in machine.LOG:
    print('EV', repr(event))
"""


def _run(tmp_path: Path) -> tuple[list[str], list[tuple], int]:
    requests = [frames.rtu(frames.read(40002, 4, unit=7)), frames.rtu(frames.read(40177, 29,
                                                                                  unit=7)),
                frames.rtu(frames.read(40002, 4, unit=9))]  # another device's: no reply
    script = (SCRIPT.replace("FAKE", repr(FAKE_MACHINE.read_text()))
              .replace("REQUESTS", repr([r.hex() for r in requests])))
    lines = run_micropython(tmp_path, script)
    events = [ast.literal_eval(ln[3:]) for ln in lines if ln.startswith("EV ")]
    boot = int(next(ln for ln in lines if ln.startswith("BOOT ")).split()[1])
    return lines, events, boot


def test_board_hal_drives_de_around_each_frame_and_reads_the_metering_ic(tmp_path: Path) -> None:
    lines, events, boot = _run(tmp_path)
    assert "HAL BoardHal 0" in lines
    assert ("UART 2 [('baudrate', 19200), ('bits', 8), ('parity', None), ('rx', 16), "
            "('rxbuf', 256), ('stop', 1), ('timeout', 0), ('tx', 17)]") in lines

    # RS-485: DE starts low; every frame is DE high -> write -> flush -> DE low, nothing between.
    de = [(i, e[2]) for i, e in enumerate(events) if e[:2] == ("pin", DE)]
    assert all(level == 0 for i, level in de if i < boot)  # Pin(value=0), then Rs485 again
    writes = [i for i, e in enumerate(events) if e[0] == "uart"]
    assert len(writes) == 2  # two requests for unit 7; silence for unit 9
    for i in writes:
        assert events[i - 1] == ("pin", DE, 1)
        assert events[i + 1] == ("flush",)
        assert events[i + 2] == ("pin", DE, 0)
    assert [i + 1 for i, level in de if level == 1] == writes  # high only for those frames
    replies = [events[i][1] for i in writes]
    for reply in replies:
        assert reply[0] == 7 and reply[1] == 3
        assert crc16(reply[:-2]) == int.from_bytes(reply[-2:], "little")
    assert replies[0][3:11] == struct.pack(">2H", 1, 66) + b"grid"  # model 1, Mn "gridpeer"

    # SPI: every transaction is framed by chip select, reads set bit 7; the meter reads power,
    # voltage, current, frequency and drains both energy accumulators every tick.
    spi = [i for i, e in enumerate(events) if e[0] == "spi"]
    assert spi
    for i in spi:
        assert events[i - 1] == ("pin", CS, 0) and events[i + 1] == ("pin", CS, 1)
    reads = [events[i][1][0] for i in spi]
    assert all(r & 0x80 for r in reads)
    tick = [PMEAN | 0x80, URMS | 0x80, IRMS | 0x80, FREQ | 0x80, APENERGY | 0x80,
            ANENERGY | 0x80]
    assert reads[:6] == tick and len(reads) % 6 == 0
    assert all(reads[k:k + 6] == tick for k in range(0, len(reads), 6))

    # What it read is what the meter serves: 64210 (ID 64210, L 27) of the second reply.
    regs = struct.unpack(">29H", replies[1][3:-2])
    assert regs[0:2] == (64210, 27)
    raw = struct.pack(">29H", *regs)
    _, seq, imp, exp = struct.unpack_from(">HIQQ", raw, 4)
    # ANenergy 3200 x 0.1 pulse at 3200 imp/kWh = 100 Wh exported, read once and then cleared
    assert seq >= 1 and (imp, exp) == (0, 100)
    verdict = verify_reading(bytes(32), "esp-1", seq, imp, exp, raw[26:58].hex(), None)
    assert verdict == VerifiedReading("esp-1", seq, 0, 100)
