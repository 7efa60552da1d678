"""Device layer against a real pymodbus server over TCP: discovery, drivers, errors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from pymodbus.constants import ExcCodes

from gateway.devices import (
    BadDeviceData,
    Battery,
    ConverterState,
    DcDcConverter,
    DeviceTimeout,
    DeviceUnreachable,
    Meter,
    MissingModel,
    ModbusException,
    ModbusTcpBus,
    NotSunSpec,
    PvInverter,
    discover,
)
from gateway.devices.model_reader import ModelLocation, model_definition, plan_reads
from protocols.sunspec import DeviceMap
from tests.gateway.test_devices_helpers import BATTERY, ServedDevice, serve


@pytest.fixture
async def battery_dev() -> AsyncIterator[ServedDevice]:
    async with serve("battery") as served:
        yield served


def bus_for(served: ServedDevice, **kw: float) -> ModbusTcpBus:
    return ModbusTcpBus(host="127.0.0.1", port=served.port, timeout_s=kw.pop("timeout_s", 0.5),
                        retries=int(kw.pop("retries", 0)), backoff_s=0.0, **kw)


async def test_discover_finds_chain_and_common_info(battery_dev: ServedDevice) -> None:
    async with bus_for(battery_dev) as bus:
        dev = await discover(bus, unit=1)
    dmap = DeviceMap.for_role("battery")
    assert dev.base_address == 40000
    assert dict(dev.models) == {b.model_id: b.address for b in dmap.blocks}
    assert [loc.length for loc in dev.chain] == [b.length for b in dmap.blocks]
    assert (dev.common.manufacturer, dev.common.model, dev.common.serial) == (
        "gridpeer", "test-device", "SN-0001")
    assert dev.common.options is None


@pytest.mark.parametrize("base", [0, 50000])
async def test_discover_tries_the_other_sunspec_bases(base: int) -> None:
    async with serve("meter", base=base) as served, bus_for(served) as bus:
        dev = await discover(bus, unit=1)
        assert dev.base_address == base
        assert (await Meter(bus=bus, device=dev).read()).power_w == 1234


async def test_not_sunspec_when_no_marker() -> None:
    async with serve("meter") as served, bus_for(served) as bus:
        await bus.read_registers(unit=1, address=40000, count=1)  # let the helper see the store
        served.set_register(40000, 0x1234)
        with pytest.raises(NotSunSpec):
            await discover(bus, unit=1)


async def test_battery_reading(battery_dev: ServedDevice) -> None:
    async with bus_for(battery_dev) as bus:
        battery = Battery(bus=bus, device=await discover(bus, unit=1))
        before = battery_dev.requests
        r = await battery.read()
        # 713, 802 and 124 are adjacent and 103 registers long together: one request.
        assert battery_dev.requests - before == 1
    assert r.soc_pct == 55.0
    assert r.power_w == -1200
    assert (r.max_charge_w, r.max_discharge_w) == (3000, 2500)
    assert (r.soc_min_pct, r.soc_max_pct) == (10.0, 95.0)
    assert r.capacity_wh == 10000
    assert r.setpoint_w == 0  # StorCtl_Mod 0 in the served map: no command


@pytest.mark.parametrize(
    ("watts", "mode", "in_rte", "out_rte"),
    [(-1500, 2, 0, 6000), (1500, 1, 5000, 0), (0, 3, 0, 0), (3000, 1, 10000, 0)],
)
async def test_battery_set_power_writes_124(
    battery_dev: ServedDevice, watts: int, mode: int, in_rte: int, out_rte: int
) -> None:
    dmap = DeviceMap.for_role("battery")
    async with bus_for(battery_dev) as bus:
        battery = Battery(bus=bus, device=await discover(bus, unit=1))
        assert await battery.set_power(watts=watts, revert_s=60) == watts
        assert battery_dev.register(dmap.address(124, "StorCtl_Mod")) == mode
        assert battery_dev.register(dmap.address(124, "InWRte")) == in_rte
        assert battery_dev.register(dmap.address(124, "OutWRte")) == out_rte
        assert battery_dev.register(dmap.address(124, "InOutWRte_RvrtTms")) == 60
        r = await battery.read()
        assert (r.setpoint_w, r.revert_s) == (watts, 60)
    # The revert time went out before the rate it protects.
    assert battery_dev.writes[0][0] == dmap.address(124, "InOutWRte_RvrtTms")


@pytest.mark.parametrize(("watts", "revert_s"), [(3001, 60), (-2501, 60), (100, 0)])
async def test_battery_rejects_out_of_limit_setpoints(
    battery_dev: ServedDevice, watts: int, revert_s: int
) -> None:
    async with bus_for(battery_dev) as bus:
        battery = Battery(bus=bus, device=await discover(bus, unit=1))
        with pytest.raises(ValueError):
            await battery.set_power(watts=watts, revert_s=revert_s)
    assert battery_dev.writes == []


async def test_driver_needs_its_models() -> None:
    async with serve("meter") as served, bus_for(served) as bus:
        dev = await discover(bus, unit=1)
        with pytest.raises(MissingModel, match=r"one of SunSpec models \[802, 713\]"):
            Battery(bus=bus, device=dev)
        with pytest.raises(MissingModel):
            DcDcConverter(bus=bus, device=dev)


async def test_meter_reading() -> None:
    async with serve("meter") as served, bus_for(served) as bus:
        r = await Meter(bus=bus, device=await discover(bus, unit=1)).read()
    assert (r.power_w, r.import_wh, r.export_wh) == (1234, 123456, 6543)
    assert r.voltage_v == pytest.approx(230.1)
    assert r.frequency_hz == pytest.approx(50.01)


async def test_pv_reading_and_limit() -> None:
    dmap = DeviceMap.for_role("pv")
    async with serve("pv") as served, bus_for(served) as bus:
        pv = PvInverter(bus=bus, device=await discover(bus, unit=1))
        r = await pv.read()
        assert (r.power_w, r.energy_wh, r.rated_w, r.limit_pct) == (-3210, 987654, 4000, None)
        await pv.set_limit(pct=40, revert_s=120)
        assert served.register(dmap.address(704, "WMaxLimPctEna")) == 1
        assert served.register(dmap.address(704, "WMaxLimPctEnaRvrt")) == 0
        assert (await pv.read()).limit_pct == 40
        await pv.clear_limit()
        assert (await pv.read()).limit_pct is None


async def test_dcdc_reading_and_current() -> None:
    dmap = DeviceMap.for_role("dcdc")
    async with serve("dcdc") as served, bus_for(served) as bus:
        conv = DcDcConverter(bus=bus, device=await discover(bus, unit=1))
        r = await conv.read()
        assert r.state is ConverterState.WAIT
        assert (r.bus_voltage_v, r.current_limit_a, r.port_voltage_v) == (380.0, 20.0, 48.0)
        await conv.set_current(amps=-5.5, revert_s=30)
        assert served.register(dmap.address(64200, "Mode")) == ConverterState.CC_DISCHARGE
        assert served.register(dmap.address(64200, "ASet")) == 55
        assert served.register(dmap.address(64200, "RvrtTms")) == 30
        with pytest.raises(ValueError):
            await conv.set_current(amps=20.1, revert_s=30)
        with pytest.raises(ValueError):
            await conv.hold_voltage(volts=401, revert_s=30)


async def test_exception_response_is_a_modbus_exception(battery_dev: ServedDevice) -> None:
    async with bus_for(battery_dev) as bus:
        dev = await discover(bus, unit=1)
        battery_dev.fault = ExcCodes.DEVICE_FAILURE
        with pytest.raises(ModbusException) as info:
            await Battery(bus=bus, device=dev).read()
    assert info.value.code == 4
    assert bus.stats.exception_responses == 1


async def test_silent_device_times_out_after_retries(battery_dev: ServedDevice) -> None:
    async with bus_for(battery_dev, timeout_s=0.1, retries=1) as bus:
        dev = await discover(bus, unit=1)
        battery_dev.fault = "silent"
        with pytest.raises(DeviceTimeout):
            await Battery(bus=bus, device=dev).read()
        assert (bus.stats.retries, bus.stats.timeouts) == (1, 2)
        battery_dev.fault = None  # the bus reconnects and carries on
        assert (await Battery(bus=bus, device=dev).read()).soc_pct == 55.0


async def test_refused_connection_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        async with ModbusTcpBus(host="127.0.0.1", port=port, timeout_s=0.5, retries=0) as bus:
            with pytest.raises(DeviceUnreachable):
                await discover(bus, unit=1)


async def test_garbage_scale_factor_is_bad_device_data(battery_dev: ServedDevice) -> None:
    dmap = DeviceMap.for_role("battery")
    async with bus_for(battery_dev) as bus:
        battery = Battery(bus=bus, device=await discover(bus, unit=1))
        battery_dev.set_register(dmap.address(124, "WChaMax_SF"), 50)
        with pytest.raises(BadDeviceData, match="WChaMax"):
            await battery.read()


async def test_changed_map_is_detected(battery_dev: ServedDevice) -> None:
    dmap = DeviceMap.for_role("battery")
    async with bus_for(battery_dev) as bus:
        battery = Battery(bus=bus, device=await discover(bus, unit=1))
        battery_dev.set_register(dmap.block(124).address, 123)
        with pytest.raises(BadDeviceData, match="discover it again"):
            await battery.read()


def test_plan_reads_cuts_long_models_on_point_boundaries() -> None:
    dmap = DeviceMap.for_role("pv")
    locs = [ModelLocation(model_id=b.model_id, address=b.address, length=b.length)
            for b in dmap.blocks]
    defs = {loc: model_definition(loc) for loc in locs}
    reads = plan_reads(locs, defs)
    assert all(count <= 125 for _, count in reads)
    assert reads[0][0] == dmap.base + 2
    assert sum(c for _, c in reads) == dmap.end_address - dmap.base - 2  # contiguous, no overlap
    starts = {loc.address + p.offset for loc in locs for p in defs[loc].points}
    assert all(start in starts for start, _ in reads)
    assert all(a + c == b for (a, c), (b, _) in zip(reads, reads[1:], strict=False))
    assert len(reads) == -(-sum(c for _, c in reads) // 125)  # the minimum for 342 registers


def test_battery_values_cover_every_mandatory_point() -> None:
    """Keeps the helper's battery honest: a SunSpec checker would reject missing mandatory ones."""
    dmap = DeviceMap.for_role("battery")
    missing = [(m.id, p.name) for m in dmap.models[1:] for p in m.points[2:]
               if p.mandatory and (m.id, p.name) not in BATTERY
               and not p.name.startswith(("Evt", "EvtVnd"))]
    assert missing == []
