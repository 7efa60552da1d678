"""Faults from a scenario file, met by the gateway's own bus: corrupted frames, delay, offline.

Each world comes from a scenario with a ``[homes.faults.<role>]`` table, so the file format, the
world's fault wiring and the served adapters are all under test, and the client side is the
gateway's ``ModbusBus`` (pymodbus underneath) exactly as a running gateway uses it.
"""

import asyncio
import os

import pytest

from gateway.devices.bus import ModbusSerialBus, ModbusTcpBus
from gateway.devices.errors import DeviceTimeout
from sim_devices.scenario import parse_scenario
from sim_devices.world import World
from tests._require import require
from tests.sim.conftest import until

START_S = 10 * 3600
COMMON = 70
"""SunS marker and model 1 (ID, L, 66 registers): constant, so every good read is identical."""


def _world(faults: dict[str, object], *, speed: float = 60.0) -> World:
    scenario = parse_scenario({
        "name": "faulty-street", "seed": 3, "start": "10:00", "speed": speed,
        "market": {"community": "faulty-street"},
        "homes": [{"name": "home-1", "faults": {"meter": faults}}, {"name": "home-2"}],
    }, source="test")
    return scenario.world()


def _expected(world: World, home: str, role: str) -> tuple[int, ...]:
    bank = world.home(home).devices[role].bank
    return tuple(bank.get(40000 + i) for i in range(COMMON))


async def test_corrupted_rtu_frames_fail_the_crc_and_the_gateway_bus_retries():
    require(hasattr(os, "openpty"), "no pty support on this OS")
    world = _world({"corrupt_p": 0.3})
    async with world.serve(rtu=True) as served:
        bus = ModbusSerialBus(port=served.rtu_path("home-1", "meter"), baudrate=115200,
                              timeout_s=0.1, retries=8, backoff_s=0.0, backoff_max_s=0.0)
        async with bus:
            reads = [await bus.read_registers(unit=1, address=40000, count=COMMON)
                     for _ in range(8)]
        # Not one corrupted reply got through as data: every read is the device's true registers.
        assert set(reads) == {_expected(world, "home-1", "meter")}
        # ... and some replies were corrupted: pymodbus dropped them on the CRC, the bus retried.
        assert bus.stats.timeouts > 0 and bus.stats.retries == bus.stats.timeouts
        assert bus.stats.failures == 0


async def test_added_delay_beyond_the_timeout_times_out_and_within_it_answers():
    world = _world({"delay_s": 0.3})
    async with world.serve() as served:
        host, port = served.address("home-1", "meter")
        async with ModbusTcpBus(host=host, port=port, timeout_s=0.1, retries=0) as impatient:
            with pytest.raises(DeviceTimeout):
                await impatient.read_registers(unit=1, address=40000, count=2)
        async with ModbusTcpBus(host=host, port=port, timeout_s=2.0, retries=0) as patient:
            loop = asyncio.get_running_loop()
            sent = loop.time()
            assert await patient.read_registers(unit=1, address=40000, count=COMMON) == (
                _expected(world, "home-1", "meter"))
            assert loop.time() - sent >= 0.3  # the reply really was held back
        # The delay is the meter's only: its neighbour answers a quick client at once.
        host, port = served.address("home-2", "meter")
        async with ModbusTcpBus(host=host, port=port, timeout_s=0.1, retries=0) as quick:
            assert len(await quick.read_registers(unit=1, address=40000, count=2)) == 2


async def test_offline_window_silences_the_device_and_it_comes_back_after():
    window = (START_S + 60, START_S + 150)  # simulated seconds: 0.5 s to 1.25 s real at 120x
    world = _world({"offline": [list(window)]}, speed=120.0)
    async with world.serve() as served:
        host, port = served.address("home-1", "meter")
        async with ModbusTcpBus(host=host, port=port, timeout_s=0.2, retries=0) as bus:
            expected = _expected(world, "home-1", "meter")
            assert await bus.read_registers(unit=1, address=40000, count=COMMON) == expected
            assert world.now_s < window[0]  # that read was before the window

            assert await until(world, lambda: world.now_s >= window[0] + 5, sim_s=120)
            with pytest.raises(DeviceTimeout):
                await bus.read_registers(unit=1, address=40000, count=2)
            assert world.now_s < window[1]  # ... and that silence was inside it

            assert await until(world, lambda: world.now_s >= window[1], sim_s=200)
            assert await bus.read_registers(unit=1, address=40000, count=COMMON) == expected
            assert bus.stats.timeouts == 1
