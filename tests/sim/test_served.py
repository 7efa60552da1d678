"""The served world through a real pymodbus client over real loopback sockets."""

import asyncio

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from protocols.sunspec.devices import ROLE_MODELS, SUNS_MARKER, DeviceMap
from protocols.sunspec.points import decode
from sim_devices.faults import FaultSpec
from sim_devices.home import HomeSpec
from sim_devices.world import ROLES, World
from tests.sim.conftest import until

BASE = 40000
HOMES = [HomeSpec(name="home-1", soc_start_pct=50), HomeSpec(name="home-2", pv_peak_w=6000)]


def _world(**kwargs):
    kwargs.setdefault("speed", 300.0)
    return World(homes=HOMES, seed=1, start_s=10 * 3600, **kwargs)


async def _read(client, addr, count):
    regs = []
    while count:
        n = min(count, 125)
        rr = await client.read_holding_registers(addr, count=n)
        assert not rr.isError(), rr
        regs += rr.registers
        addr, count = addr + n, count - n
    return regs


async def _point(client, role, model, name):
    dm = DeviceMap.for_role(role)
    point = dm.point(model, name)
    return decode(point, await _read(client, dm.address(model, name), point.size))


async def _write(client, role, model, values):
    """Write ``{point: raw}`` as a gateway would: one FC 16 request per run of adjacent points.

    Returns the last response, or the first that is an error.
    """
    dm = DeviceMap.for_role(role)
    regs = {}
    for name, value in values.items():
        point = dm.point(model, name)
        raw = value & ((1 << (16 * point.size)) - 1)
        for i in range(point.size):
            regs[dm.address(model, name) + i] = (raw >> (16 * (point.size - 1 - i))) & 0xFFFF
    addrs = sorted(regs)
    runs, start = [], addrs[0]
    for prev, addr in zip(addrs, addrs[1:] + [None], strict=True):
        if addr != prev + 1:
            runs.append((start, [regs[a] for a in range(start, prev + 1)]))
            start = addr
    rr = None
    for start, run in runs:
        rr = await client.write_registers(start, run)
        if rr.isError():
            return rr
    return rr


async def test_every_device_presents_suns_and_its_model_chain():
    world = _world()
    async with world.serve() as served:
        for home in ("home-1", "home-2"):
            for role in ROLES:
                host, port = served.address(home, role)
                assert host == "127.0.0.1" and port > 0
                async with AsyncModbusTcpClient(host, port=port) as client:
                    assert tuple(await _read(client, BASE, 2)) == SUNS_MARKER
                    addr, seen = BASE + 2, []
                    while True:
                        model_id, length = await _read(client, addr, 2)
                        if model_id == 0xFFFF:
                            break
                        seen.append(model_id)
                        body = await _read(client, addr + 2, length)
                        assert len(body) == length
                        addr += 2 + length
                    assert tuple(seen) == ROLE_MODELS[role]
                    assert await _point(client, role, 1, "SN") == f"{home}-{role}"
                    assert await _point(client, role, 1, "Mn") == "gridpeer"


async def test_meter_and_pv_report_the_physics():
    world = _world()
    async with world.serve() as served:
        await until(world, lambda: world.now_s > 10 * 3600 + 120, sim_s=600)
        home = world.home("home-1")
        async with AsyncModbusTcpClient(*served.address("home-1", "meter")[:1],
                                        port=served.address("home-1", "meter")[1]) as meter:
            w = await _point(meter, "meter", 203, "W")
            exported = await _point(meter, "meter", 203, "TotWhExp")
        # Sunny late morning, idle battery: the home exports, the meter says so (+ = import).
        assert w < 0 and exported > 0
        assert exported <= home.meter.export_wh
        host, port = served.address("home-1", "pv")
        async with AsyncModbusTcpClient(host, port=port) as pv:
            assert await _point(pv, "pv", 701, "W") > 0
            assert await _point(pv, "pv", 702, "WMaxRtg") == HOMES[0].pv_peak_w


async def test_battery_setpoint_over_modbus_moves_soc():
    world = _world(speed=1000.0)
    async with world.serve() as served:
        host, port = served.address("home-1", "battery")
        async with AsyncModbusTcpClient(host, port=port) as client:
            soc0 = await _point(client, "battery", 802, "SoC")
            rr = await _write(client, "battery", 124, {
                "StorCtl_Mod": 1, "InWRte": 5000, "InOutWRte_RvrtTms": 900})
            assert not rr.isError()
            battery = world.home("home-1").battery
            assert battery.command_w == HOMES[0].battery_max_w // 2
            assert await until(world, lambda: world.home("home-1").battery.soc_pct > 52, sim_s=900)
            await asyncio.sleep(0.02)  # one stepper batch so the registers caught up
            soc1 = await _point(client, "battery", 802, "SoC")
            assert soc1 > soc0
            assert await _point(client, "battery", 802, "W") == HOMES[0].battery_max_w // 2
            assert await _point(client, "battery", 124, "ChaSt") == 4  # CHARGING
            # Now discharge: SoC falls.
            rr = await _write(client, "battery", 124, {"StorCtl_Mod": 2, "OutWRte": 10000})
            assert not rr.isError()
            high = world.home("home-1").battery.soc_pct
            assert await until(world, lambda: world.home("home-1").battery.soc_pct < high - 2,
                               sim_s=900)
            assert world.home("home-1").battery.power_w == -HOMES[0].battery_max_w


async def test_battery_reverts_to_idle_when_not_refreshed():
    world = _world()
    async with world.serve() as served:
        host, port = served.address("home-1", "battery")
        async with AsyncModbusTcpClient(host, port=port) as client:
            await _write(client, "battery", 124, {
                "StorCtl_Mod": 2, "OutWRte": 4000, "InOutWRte_RvrtTms": 60})
            written_at = world.now_s
            assert world.home("home-1").battery.command_w == -1200
            assert await until(world, lambda: world.home("home-1").battery.power_w == -1200,
                               sim_s=30)
            assert await until(world, lambda: world.home("home-1").battery.command_w == 0,
                               sim_s=300)
            assert world.now_s >= written_at + 60
            await asyncio.sleep(0.02)
            assert await _point(client, "battery", 124, "StorCtl_Mod") == 0
            assert await _point(client, "battery", 124, "OutWRte") == 0
            assert await until(world, lambda: world.home("home-1").battery.power_w == 0, sim_s=30)


@pytest.mark.parametrize("values", [{"InWRte": 10001}, {"OutWRte": -10001},
                                    {"StorCtl_Mod": 4}])
async def test_bad_battery_setpoint_is_refused_with_exception_3(values):
    world = _world()
    async with world.serve() as served:
        host, port = served.address("home-1", "battery")
        async with AsyncModbusTcpClient(host, port=port) as client:
            rr = await _write(client, "battery", 124, values)
            assert rr.isError() and rr.exception_code == 3
            assert await _point(client, "battery", 124, "StorCtl_Mod") == 0
            assert world.home("home-1").battery.command_w == 0


async def test_pv_limit_curtails_and_reverts():
    world = _world()
    async with world.serve() as served:
        host, port = served.address("home-2", "pv")
        async with AsyncModbusTcpClient(host, port=port) as client:
            rr = await _write(client, "pv", 704, {
                "WMaxLimPctEna": 1, "WMaxLimPct": 1000, "WMaxLimPctRvrtTms": 120})
            assert not rr.isError()
            assert await until(world, lambda: world.home("home-2").pv.power_w == 600, sim_s=30)
            assert world.home("home-2").pv.available_w > 600
            assert 0 < await _point(client, "pv", 704, "WMaxLimPctRvrtRem") <= 120
            assert await until(world, lambda: world.home("home-2").pv.limit_w is None,
                               sim_s=300)
            assert await _point(client, "pv", 704, "WMaxLimPctEna") == 0


async def test_device_that_drops_every_response_times_out_but_others_answer():
    faults = {("home-1", "battery"): FaultSpec(drop_p=1.0)}
    world = _world(faults=faults)
    async with world.serve() as served:
        host, port = served.address("home-1", "battery")
        async with AsyncModbusTcpClient(host, port=port, timeout=0.2, retries=0) as client:
            with pytest.raises(ModbusException):
                await client.read_holding_registers(BASE, count=2)
        host, port = served.address("home-1", "meter")
        async with AsyncModbusTcpClient(host, port=port, timeout=1, retries=0) as client:
            rr = await client.read_holding_registers(BASE, count=2)
            assert tuple(rr.registers) == SUNS_MARKER


async def test_dropped_responses_are_seeded_and_partial():
    async def outcomes():
        world = _world(faults={("home-1", "meter"): FaultSpec(drop_p=0.5)})
        async with world.serve() as served:
            host, port = served.address("home-1", "meter")
            results = []
            for _ in range(12):  # fresh connection each time: a late reply cannot leak over
                async with AsyncModbusTcpClient(host, port=port, timeout=0.1,
                                                retries=0) as client:
                    try:
                        await client.read_holding_registers(BASE, count=2)
                        results.append(True)
                    except ModbusException:
                        results.append(False)
            return results

    first = await outcomes()
    assert True in first and False in first
    assert first == await outcomes()
