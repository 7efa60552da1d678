"""The device layer against the simulated community: our firmware's role code and Modbus core,
served over real TCP sockets and RTU on a pty, with physics behind it."""

from __future__ import annotations

import asyncio

import pytest

from gateway.devices import (
    Battery,
    Meter,
    ModbusSerialBus,
    ModbusTcpBus,
    PvInverter,
    discover,
)
from sim_devices.home import HomeSpec
from sim_devices.world import World

_GUARD_S = 20.0  # turns a hang into a failure; nothing here depends on timing

NOON_S = 12 * 3600.0


def _world(speed: float = 1.0) -> World:
    return World(homes=[HomeSpec(name="a", soc_start_pct=50.0, battery_max_w=3000)],
                 seed=7, speed=speed, start_s=NOON_S)


async def test_gateway_reads_and_commands_the_simulated_home() -> None:
    world = _world()
    async with asyncio.timeout(_GUARD_S), world.serve() as served:
        buses = {role: ModbusTcpBus(host=h, port=p, timeout_s=1.0)
                 for role in ("meter", "pv", "battery")
                 for h, p in [served.address("a", role)]}
        try:
            devices = {role: await discover(bus, unit=1) for role, bus in buses.items()}
            assert devices["battery"].common.serial == "a-battery"
            battery = Battery(bus=buses["battery"], device=devices["battery"])
            reading = await battery.read()
            truth = world.home("a").battery
            assert reading.soc_pct == pytest.approx(truth.soc_pct, abs=0.05)
            assert (reading.max_charge_w, reading.max_discharge_w) == (3000, 3000)
            assert (reading.soc_min_pct, reading.soc_max_pct) == (10.0, 95.0)

            assert await battery.set_power(watts=-1500, revert_s=60) == -1500
            assert world.home("a").battery.command_w == -1500  # the firmware took it
            assert (await battery.read()).setpoint_w == -1500

            meter = await Meter(bus=buses["meter"], device=devices["meter"]).read()
            assert meter.import_wh >= 0 and meter.export_wh >= 0
            pv = PvInverter(bus=buses["pv"], device=devices["pv"])
            await pv.set_limit(pct=25, revert_s=60)
            assert (await pv.read()).limit_pct == 25
            assert world.home("a").pv.limit_w == 1000  # 25 % of the 4 kW rating
        finally:
            for bus in buses.values():
                bus.close()


async def test_battery_setpoint_reverts_when_not_refreshed() -> None:
    world = _world(speed=200.0)  # 200 simulated seconds per real second
    async with asyncio.timeout(_GUARD_S), world.serve() as served:
        host, port = served.address("a", "battery")
        async with ModbusTcpBus(host=host, port=port, timeout_s=1.0) as bus:
            battery = Battery(bus=bus, device=await discover(bus, unit=1))
            await battery.set_power(watts=1200, revert_s=5)
            assert world.home("a").battery.command_w == 1200
            t0 = world.now_s
            while world.now_s < t0 + 10:
                await asyncio.sleep(0.01)
            assert (await battery.read()).setpoint_w == 0
            assert world.home("a").battery.command_w == 0


async def test_rtu_over_a_pty() -> None:
    world = _world()
    async with asyncio.timeout(_GUARD_S), world.serve(rtu=True) as served:
        async with ModbusSerialBus(port=served.rtu_path("a", "battery"), baudrate=115200,
                                   timeout_s=1.0) as bus:
            dev = await discover(bus, unit=1)
            assert dict(dev.models).keys() == {1, 713, 802, 124}
            battery = Battery(bus=bus, device=dev)
            assert (await battery.read()).max_charge_w == 3000
            assert await battery.set_power(watts=-700, revert_s=30) == -700
            assert world.home("a").battery.command_w == -700
