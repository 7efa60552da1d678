"""The controllable load driver against the simulated home's EV charger and appliance, served by
the firmware's role code and Modbus core over real TCP sockets."""

from __future__ import annotations

import asyncio

import pytest

from gateway.devices import (
    ControllableLoad,
    LoadKind,
    MissingModel,
    ModbusException,
    ModbusTcpBus,
    discover,
)
from sim_devices.ev import EvSpec
from sim_devices.home import HomeSpec
from sim_devices.world import World

_GUARD_S = 20.0  # turns a hang into a failure; nothing here depends on timing
EV = EvSpec(battery_wh=40_000, max_charge_w=7400, arrival_h=18.0, departure_h=7.5)


def _world() -> World:
    home = HomeSpec(name="a", ev=EV, flex_w=2000, flex_wh=3000, pv_peak_w=0)
    return World(homes=[home], seed=3, speed=1.0, start_s=19 * 3600.0)


async def test_the_gateway_reads_what_a_load_needs_and_limits_it() -> None:
    world = _world()
    async with asyncio.timeout(_GUARD_S), world.serve() as served:
        buses = {key: ModbusTcpBus(host=h, port=p, timeout_s=1.0) for key in ("ev", "flex")
                 for h, p in [served.address("a", key)]}
        try:
            ev_device = await discover(buses["ev"], unit=1)
            assert ev_device.common.serial == "a-ev" and ev_device.common.model == "gridpeer-load"
            charger = ControllableLoad(bus=buses["ev"], device=ev_device)
            reading = await charger.read()
            assert reading.kind == LoadKind.EVSE and reading.connected
            assert (reading.max_w, reading.deadline_min, reading.limited) == (7400, 450, False)
            assert reading.need_wh == 21_740  # 40 % -> 90 % of 40 kWh through a 92 % charger

            await charger.set_limit(watts=1800, revert_s=90)
            assert world.home("a").hal_loads["ev"].limit_w == 1800  # the firmware took it
            reading = await charger.read()
            assert (reading.limit_w, reading.limited) == (1800, True)
            assert reading.revert_remaining_s is not None and 0 < reading.revert_remaining_s <= 90

            flex = ControllableLoad(bus=buses["flex"], device=await discover(buses["flex"],
                                                                             unit=1))
            appliance = await flex.read()
            assert appliance.kind == LoadKind.APPLIANCE and appliance.deadline_min == 21 * 60
            assert appliance.max_w == 2000 and appliance.need_wh <= 3000
        finally:
            for bus in buses.values():
                bus.close()


async def test_limits_no_load_can_have_are_refused_before_and_by_the_device() -> None:
    world = _world()
    async with asyncio.timeout(_GUARD_S), world.serve() as served:
        host, port = served.address("a", "ev")
        async with ModbusTcpBus(host=host, port=port, timeout_s=1.0) as bus:
            device = await discover(bus, unit=1)
            charger = ControllableLoad(bus=bus, device=device)
            with pytest.raises(ValueError, match=r"outside the device range 0\.\.7400 W"):
                await charger.set_limit(watts=7401, revert_s=60)
            with pytest.raises(ValueError, match="revert_s must be 1..65534"):
                await charger.set_limit(watts=100, revert_s=0)
            address = device.location(64220)
            assert address is not None
            with pytest.raises(ModbusException) as refused:  # what a buggy client would get
                await bus.write_registers(unit=1, address=address.address + 8,
                                          values=[9000, 60])
            assert refused.value.code == 3
            assert world.home("a").hal_loads["ev"].limit_w is None  # nothing half-applied

            meter_host, meter_port = served.address("a", "meter")
            async with ModbusTcpBus(host=meter_host, port=meter_port, timeout_s=1.0) as other:
                with pytest.raises(MissingModel, match=r"needs SunSpec model\(s\) \[64220\]"):
                    ControllableLoad(bus=other, device=await discover(other, unit=1))
