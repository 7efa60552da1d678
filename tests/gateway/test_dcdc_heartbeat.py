"""The converter driver's heartbeat refreshes a running command without restarting a converter
that tripped since it was last read; only a command after reading the trip restarts it."""

import asyncio
import contextlib

from gateway.devices import ConverterState, DcDcConverter, ModbusTcpBus, discover
from sim_devices.dcbus import ConverterSpec, DcBusSpec
from sim_devices.home import HomeSpec
from sim_devices.world import World
from tests.sim.conftest import until

HOMES = [
    HomeSpec(name="home-1", soc_start_pct=30, battery_max_w=5000, dcdc=ConverterSpec(max_a=10)),
    HomeSpec(name="home-2", soc_start_pct=80, dcdc=ConverterSpec(max_a=10)),
    HomeSpec(name="home-3", soc_start_pct=80, dcdc=ConverterSpec(max_a=10)),
]


@contextlib.asynccontextmanager
async def converters(served):
    buses = [ModbusTcpBus(host=host, port=port, timeout_s=1.0)
             for host, port in (served.address(h.name, "dcdc") for h in HOMES)]
    try:
        yield [DcDcConverter(bus=bus, device=await discover(bus, unit=1)) for bus in buses]
    finally:
        for bus in buses:
            bus.close()


async def test_heartbeat_never_clears_a_trip_it_has_not_read():
    world = World(homes=HOMES, seed=2, speed=100.0, start_s=3 * 3600, dc_bus=DcBusSpec())
    async with asyncio.timeout(30), world.serve() as served, \
            converters(served) as (master, first, second):
        await master.hold_voltage(volts=350, revert_s=600, limit_a=9.5)
        assert world.home("home-1").dcdc_role.state == ConverterState.CV
        assert (await master.read()).current_limit_a == 9.5  # the cap went with the command
        # Two members inject 16 A: more than the master's cap, so the bus trips.
        await first.set_current(amps=-8, revert_s=600)
        await second.set_current(amps=-8, revert_s=600)
        assert await until(world, lambda: world.dc_bus.tripped, sim_s=60)
        assert await until(world, lambda: world.home("home-1").dcdc_role.state
                           == ConverterState.TRIPPED, sim_s=30)

        # The master's driver last read CV: its heartbeat refreshes the setpoint only.
        await master.hold_voltage(volts=350, revert_s=600, limit_a=9.5)
        seen = await master.read()
        assert seen.state is ConverterState.TRIPPED and "OVER_VOLTAGE" in seen.trips
        assert world.dc_bus.tripped

        # Having read the trip, waiting acknowledges it; the members are told to wait too.
        for driver in (first, second):
            await driver.read()
            await driver.wait(revert_s=600)
        await master.wait(revert_s=600)
        assert (await master.read()).trips == frozenset()
        # A deliberate CV command restarts the master, which brings the bus back.
        await master.hold_voltage(volts=350, revert_s=600, limit_a=9.5)
        assert await until(world, lambda: world.dc_bus.voltage_v == 350.0, sim_s=60)
        assert not world.dc_bus.tripped
        assert all(world.home(h).dcdc_role.state == ConverterState.WAIT
                   for h in ("home-2", "home-3"))
