"""The gateway's converter driver over Modbus TCP moves energy between two homes' batteries
through the simulated DC bus, and reads the trip that a wrong dispatch causes."""

import asyncio
import contextlib

import pytest

from gateway.devices import ConverterState, DcDcConverter, ModbusTcpBus, discover
from sim_devices.dcbus import ConverterSpec, DcBusSpec
from sim_devices.home import HomeSpec
from sim_devices.world import World
from tests.sim.conftest import until

_GUARD_S = 30.0  # turns a hang into a failure; nothing here depends on timing

HOMES = [
    HomeSpec(name="home-1", soc_start_pct=30, battery_max_w=5000, dcdc=ConverterSpec(max_a=10)),
    HomeSpec(name="home-2", soc_start_pct=80, dcdc=ConverterSpec(max_a=10)),
    HomeSpec(name="home-3", soc_start_pct=80, dcdc=ConverterSpec(max_a=10)),
]


@contextlib.asynccontextmanager
async def _converters(world, served, names):
    buses = [ModbusTcpBus(host=host, port=port, timeout_s=1.0)
             for host, port in (served.address(name, "dcdc") for name in names)]
    try:
        yield [DcDcConverter(bus=bus, device=await discover(bus, unit=1)) for bus in buses]
    finally:
        for bus in buses:
            bus.close()


async def test_driver_moves_energy_over_the_bus_and_reads_the_trip_of_a_wrong_dispatch():
    world = World(homes=HOMES, seed=2, speed=100.0, start_s=3 * 3600, dc_bus=DcBusSpec())
    async with asyncio.timeout(_GUARD_S), world.serve() as served, \
            _converters(world, served, ("home-1", "home-2", "home-3")) as (master, src, extra):
        first = await master.read()
        assert first.state is ConverterState.WAIT and first.trips == frozenset()
        assert (first.bus_voltage_v, first.current_limit_a) == (350.0, 10.0)
        assert (first.bus_voltage_min_v, first.bus_voltage_max_v) == (320.0, 380.0)
        assert first.port_voltage_v == 50.0

        # Right dispatch: home-1 holds the bus, home-2 pushes 8 A from its battery onto it.
        await master.hold_voltage(volts=350, revert_s=600)
        await src.set_current(amps=-8, revert_s=600)
        soc = {h.name: h.battery.soc_pct for h in world.homes}
        assert await until(world, lambda: world.home("home-1").battery.soc_pct
                           > soc["home-1"] + 0.2, sim_s=600)
        assert world.home("home-2").battery.soc_pct < soc["home-2"] - 0.2
        assert world.dc_bus.voltage_v == 350.0 and not world.dc_bus.tripped
        m, s = await master.read(), await src.read()
        assert m.state is ConverterState.CV and s.state is ConverterState.CC_DISCHARGE
        assert s.current_a == pytest.approx(-8.0) and m.current_a == pytest.approx(8.0, abs=0.01)
        assert m.bus_voltage_v == 350.0 and 0 < m.revert_remaining_s <= 600
        assert s.power_w == -2800 and m.power_w == 2800
        assert m.port_voltage_v == 50.0

        # Wrong dispatch: a second home also injects 8 A; 16 A is beyond the master's 10 A.
        await extra.set_current(amps=-8, revert_s=600)
        assert await until(world, lambda: world.dc_bus.tripped, sim_s=120)
        assert await until(world, lambda: world.home("home-3").dcdc_role.state
                           == ConverterState.TRIPPED, sim_s=30)
        for conv in (master, src, extra):
            reading = await conv.read()
            assert reading.state is ConverterState.TRIPPED
            assert reading.trips == frozenset({"OVER_VOLTAGE"})
            assert reading.bus_voltage_v > 380.0
        assert await until(world, lambda: all(h.dc_flow.bus_w == 0 for h in world.homes),
                           sim_s=10)  # protection stopped them all

        # The gateway restores the bus: the master first, then one home injecting again.
        await master.hold_voltage(volts=350, revert_s=600)
        assert await until(world, lambda: not world.dc_bus.tripped, sim_s=60)
        await src.set_current(amps=-8, revert_s=600)
        assert await until(world, lambda: world.home("home-2").dc_flow.bus_w == -2800, sim_s=60)
        assert (await master.read()).trips == frozenset()
        assert (await extra.read()).state is ConverterState.TRIPPED


async def test_refused_setpoint_leaves_the_converter_running_and_wait_is_honoured():
    world = World(homes=HOMES[:2], seed=2, speed=100.0, start_s=3 * 3600, dc_bus=DcBusSpec())
    async with asyncio.timeout(_GUARD_S), world.serve() as served, \
            _converters(world, served, ("home-1", "home-2")) as (master, src):
        await master.hold_voltage(volts=350, revert_s=600)
        await src.set_current(amps=-5, revert_s=30)
        with pytest.raises(ValueError, match="device limit"):
            await src.set_current(amps=-10.5, revert_s=30)  # the driver checks AMax first
        assert world.home("home-2").hal_dcdc.a_set_x100 == 500
        # Not refreshed: the converter reverts to WAIT on its own and says so.
        assert await until(world, lambda: world.home("home-2").dcdc_role.state
                           == ConverterState.WAIT, sim_s=120)
        reverted = await src.read()
        assert reverted.state is ConverterState.WAIT and reverted.trips == frozenset({"REVERTED"})
        assert reverted.revert_remaining_s == 0
        await master.wait(revert_s=60)
        assert (await master.read()).state is ConverterState.WAIT
        assert world.home("home-1").hal_dcdc.mode == ConverterState.WAIT
