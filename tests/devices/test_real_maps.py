"""The gateway's drivers against SunSpec maps nobody here wrote (pysunspec2's device images and
models built from its definitions), over Modbus TCP: discover, read, command, revert.

One test per row of issue 18's table, plus a legacy float inverter and a meter at unit 2 behind
its inverter's TCP address. Where a map cannot carry a command, the command is refused with the
reason, and nothing is written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.devices import (
    BadDeviceData,
    Battery,
    DcDcConverter,
    DiscoveredDevice,
    ImplausibleReading,
    Meter,
    MissingModel,
    ModbusTcpBus,
    PvInverter,
    discover,
)
from gateway.devices.errors import NotCommandable
from gateway.devices.load import ControllableLoad
from gateway.devices.model_reader import model_definition
from tests.devices.maps import (
    PUBLISHED_1547,
    STORAGE_1547,
    der_1547,
    inverter,
    meter,
    storage_124,
)
from tests.devices.served import INVERTER_129, Served, device_file, framed, serve


@asynccontextmanager
async def device(*models: list[int], unit: int = 1
                 ) -> AsyncIterator[tuple[Served, ModbusTcpBus, DiscoveredDevice]]:
    """``models`` served at ``unit``, a bus to them and what discovery found."""
    async with serve({unit: framed(models)}) as served, bus_to(served) as bus:
        yield served, bus, await discover(bus, unit=unit)


def bus_to(served: Served) -> ModbusTcpBus:
    return ModbusTcpBus(host="127.0.0.1", port=served.port, timeout_s=2.0, retries=1,
                        backoff_s=0.0)


def address(found: DiscoveredDevice, model_id: int, point: str) -> int:
    loc = found.location(model_id)
    assert loc is not None
    return loc.address + model_definition(loc).point(point).offset


def written(served: Served, found: DiscoveredDevice, model_id: int, unit: int = 1
            ) -> list[Mapping[str, int]]:
    """The served unit's writes to ``model_id``, each as {point: first register}."""
    loc = found.location(model_id)
    assert loc is not None
    names = {loc.address + p.offset: p.name for p in model_definition(loc).points}
    out = []
    for start, values in served.writes[unit]:
        regs = dict(zip(range(start, start + len(values)), values, strict=True))
        out.append({names[a]: v for a, v in regs.items() if a in names})
    return out


# -- PV inverters -------------------------------------------------------------------------------

async def test_published_1547_der_reads_and_limits_through_704(tmp_path: Path) -> None:
    async with device(*der_1547(tmp_path, PUBLISHED_1547)) as (served, bus, found):
        pv = PvInverter(bus=bus, device=found)
        r = await pv.read()
        assert (r.power_w, r.energy_wh, r.rated_w, r.limit_pct) == (-9800, 150_000, 10_000, None)
        await pv.set_limit(pct=40, revert_s=300)
        assert written(served, found, 704) == [{
            "WMaxLimPctEna": 1, "WMaxLimPct": 40, "WMaxLimPctRvrt": 100,
            "WMaxLimPctEnaRvrt": 0, "WMaxLimPctRvrtTms": 0}]  # uint32 300: high word first
        assert served.register(1, address(found, 704, "WMaxLimPctRvrtTms") + 1) == 300
        assert (await pv.read()).limit_pct == 40
        await pv.clear_limit()
        assert (await pv.read()).limit_pct is None


async def test_draft_1547_der_reads_and_refuses_the_limit_it_cannot_scale(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """pysunspec2's DER as it ships: enumeration values from a draft (701 ACType 3, St 2; 702
    NorOpCatRtg 2, AbnOpCatRtg 3) in points the driver never reads, and no output limit."""
    caplog.set_level(logging.WARNING, logger="gateway.devices.plausibility")
    async with device(*der_1547(tmp_path)) as (served, bus, found):
        pv = PvInverter(bus=bus, device=found)
        for _ in range(3):
            r = await pv.read()
        assert (r.power_w, r.energy_wh, r.rated_w, r.limit_pct) == (-9800, 150_000, 10_000, None)
        noted = [rec.getMessage() for rec in caplog.records]
        for line in ("701 ACType: 3 is none of its symbols", "701 St: 2 is none of its symbols",
                     "702 NorOpCatRtg: 2 is none of its symbols",
                     "702 AbnOpCatRtg: 3 is none of its symbols"):
            assert sum(line in message for message in noted) == 1, (line, noted)
        why = ("model 704 leaves WMaxLimPctEna, WMaxLimPct, WMaxLimPct_SF, WMaxLimPctRvrt, "
               "WMaxLimPctEnaRvrt, WMaxLimPctRvrtTms not implemented")
        assert pv.commands[0].refused == why
        with pytest.raises(NotCommandable, match=why):
            await pv.set_limit(pct=50, revert_s=60)
        assert served.writes[1] == []


async def test_legacy_inverter_reads_and_limits_through_123_timer_first() -> None:
    async with device(*inverter(103)) as (served, bus, found):
        assert [loc.model_id for loc in found.chain] == [1, 103, 120, 121, 122, 123, 160]
        pv = PvInverter(bus=bus, device=found)
        r = await pv.read()
        assert (r.power_w, r.energy_wh, r.rated_w, r.limit_pct) == (-2500, 1_234_567, 5000, None)
        command = pv.commands[0]
        assert (command.model, command.refused) == (123, None)
        await pv.set_limit(pct=30, revert_s=900)
        # The timer before the value before the switch: the limit is never live without it.
        assert written(served, found, 123) == [
            {"WMaxLimPct_RvrtTms": 900}, {"WMaxLimPct": 30}, {"WMaxLim_Ena": 1}]
        assert (await pv.read()).limit_pct == 30
        await pv.clear_limit()
        assert written(served, found, 123)[-1] == {"WMaxLim_Ena": 0}
        assert (await pv.read()).limit_pct is None


@pytest.mark.parametrize("measure", [111, 112, 113])
async def test_legacy_float_inverter_reads_and_limits(measure: int) -> None:
    async with device(*inverter(measure, w=2500.4)) as (served, bus, found):
        pv = PvInverter(bus=bus, device=found)
        r = await pv.read()
        assert (r.power_w, r.energy_wh, r.rated_w) == (-2500, 1_234_567, 5000)
        await pv.set_limit(pct=60, revert_s=60)
        assert (await pv.read()).limit_pct == 60


async def test_an_unset_limit_scale_factor_refuses_the_limit_and_reads_on() -> None:
    async with device(*inverter(103, limit_sf=None)) as (served, bus, found):
        pv = PvInverter(bus=bus, device=found)
        assert (await pv.read()).power_w == -2500
        with pytest.raises(NotCommandable, match="model 123 leaves WMaxLimPct_SF not implemented"):
            await pv.set_limit(pct=50, revert_s=60)
        assert served.writes[1] == []


# -- batteries ----------------------------------------------------------------------------------

async def test_draft_1547_der_as_a_battery_is_read_and_refuses_setpoints(tmp_path: Path) -> None:
    """Storage through the 7xx models only, and its 713 and 704 say nothing: the gateway reads
    what there is and commands nothing, saying why; nothing plans with it."""
    async with device(*der_1547(tmp_path)) as (served, bus, found):
        battery = Battery(bus=bus, device=found)
        r = await battery.read()
        assert math.isnan(r.soc_pct) and r.capacity_wh is None
        assert (r.power_w, r.max_charge_w, r.max_discharge_w, r.setpoint_w) == (-9800, 0, 0, 0)
        why = ("model 704 leaves WSetEnaRvrt, WSetRvrtTms, WSetEna, WSetMod, WSet, WSet_SF, "
               "WSetRvrt not implemented")
        assert battery.commands[0].refused == why
        with pytest.raises(NotCommandable, match=why):
            await battery.set_power(watts=0, revert_s=60)
        assert served.writes[1] == []


async def test_storage_without_124_is_commanded_through_704_wset_timer_first(
        tmp_path: Path) -> None:
    async with device(*der_1547(tmp_path, STORAGE_1547)) as (served, bus, found):
        battery = Battery(bus=bus, device=found)
        r = await battery.read()
        assert (r.soc_pct, r.power_w, r.capacity_wh) == (50.0, 2000, 10_000)
        assert (r.max_charge_w, r.max_discharge_w, r.setpoint_w) == (5000, 4000, 0)
        assert battery.commands[0].refused is None
        assert await battery.set_power(watts=-3000, revert_s=60) == -3000
        assert written(served, found, 704) == [
            {"WSetEnaRvrt": 0, "WSetRvrtTms": 0},  # uint32 60: high word first
            {"WSetEna": 1, "WSetMod": 1, "WSet": 0, "WSetRvrt": 0}]  # int32 +3000 injecting
        assert served.register(1, address(found, 704, "WSet") + 1) == 3000
        r = await battery.read()
        assert (r.setpoint_w, r.revert_s) == (-3000, 60)
        assert await battery.set_power(watts=1500, revert_s=60) == 1500
        assert (await battery.read()).setpoint_w == 1500
        await battery.set_power(watts=0, revert_s=60)  # the gateway's own revert: idle
        assert (await battery.read()).setpoint_w == 0
        with pytest.raises(ValueError, match="outside the device limits"):
            await battery.set_power(watts=5001, revert_s=60)


async def test_storage_with_124_and_802_built_by_pysunspec2() -> None:
    async with device(*storage_124()) as (served, bus, found):
        battery = Battery(bus=bus, device=found)
        r = await battery.read()
        assert (r.soc_pct, r.max_charge_w, r.max_discharge_w, r.capacity_wh) == (
            55.0, 3000, 2500, 10_000)
        assert await battery.set_power(watts=-1500, revert_s=120) == -1500
        assert written(served, found, 124)[0] == {"InOutWRte_RvrtTms": 120}
        assert (await battery.read()).setpoint_w == -1500
        await battery.set_power(watts=0, revert_s=120)
        assert (await battery.read()).setpoint_w == 0


# -- meters -------------------------------------------------------------------------------------

@pytest.mark.parametrize("measure", [211, 212, 213, 214])
async def test_float_meter_reads_and_its_counters_are_checked(measure: int) -> None:
    async with device(*meter(measure, w=-1500.25, imported=5000.0, exported=700.0)) as (
            served, bus, found):
        m = Meter(bus=bus, device=found)
        r = await m.read()
        assert (m.model_id, r.power_w, r.import_wh, r.export_wh) == (measure, -1500, 5000, 700)
        assert r.voltage_v == pytest.approx(230.1) and r.frequency_hz == pytest.approx(50.01)
        high = address(found, measure, "TotWhImp")
        served.set_register(1, high, served.register(1, high) - 1)  # a float counter going back
        with pytest.raises(ImplausibleReading, match=f"{measure} TotWhImp: counter went back"):
            await m.read()


async def test_meter_at_unit_2_behind_its_inverters_address() -> None:
    maps = {1: framed(inverter(103)), 2: framed(meter(203))}
    async with serve(maps) as served, bus_to(served) as bus:
        pv = PvInverter(bus=bus, device=await discover(bus, unit=1))
        found = await discover(bus, unit=2)
        assert found.common.serial == "MT-7"
        m = Meter(bus=bus, device=found)
        assert ((await pv.read()).power_w, (await m.read()).power_w) == (-2500, -1500)


# -- what cannot be driven, and scale factors ---------------------------------------------------

async def test_an_image_with_model_129_only_is_refused_naming_what_is_missing() -> None:
    async with device(device_file(INVERTER_129)) as (served, bus, found):
        assert [loc.model_id for loc in found.chain] == [1, 129]
        for driver, needs in ((PvInverter, "one of SunSpec models [701, 103, 101, 102, 113"),
                              (Meter, "one of SunSpec models [203, 201, 204, 202, 213"),
                              (Battery, "one of SunSpec models [802, 713]"),
                              (DcDcConverter, "SunSpec model(s) [64200]"),
                              (ControllableLoad, "SunSpec model(s) [64220]")):
            with pytest.raises(MissingModel) as info:
                driver(bus=bus, device=found)
            assert needs in str(info.value) and "only has [1, 129]" in str(info.value)


async def test_a_scale_factor_changed_at_run_time_is_followed_not_refused() -> None:
    """1xx scale factors may change while the device runs (an inverter rescales its power)."""
    async with device(*inverter(103, w=2500)) as (served, bus, found):
        pv = PvInverter(bus=bus, device=found, now_s=lambda: 0.0)
        assert (await pv.read()).power_w == -2500
        served.set_register(1, address(found, 103, "W"), 25004)
        served.set_register(1, address(found, 103, "W_SF"), 0xFFFF)  # -1
        assert (await pv.read()).power_w == -2500
        served.set_register(1, address(found, 103, "W"), 2600)
        served.set_register(1, address(found, 103, "W_SF"), 0)
        assert (await pv.read()).power_w == -2600


async def test_a_static_scale_factor_that_changes_is_refused_until_confirmed(
        tmp_path: Path) -> None:
    """7xx scale factors are static: a change is a corrupted reply or a device reconfigured."""
    async with device(*der_1547(tmp_path, PUBLISHED_1547)) as (served, bus, found):
        pv = PvInverter(bus=bus, device=found)
        await pv.read()
        served.set_register(1, address(found, 701, "W_SF"), 0xFFFF)  # 0 → -1
        with pytest.raises(ImplausibleReading, match="701 W_SF: 0 → -1"):
            await pv.read()
        assert (await pv.read()).power_w == -980


async def test_a_missing_scale_factor_makes_its_point_unavailable_never_a_value() -> None:
    async with device(*inverter(103, w_sf=None)) as (served, bus, found):
        pv = PvInverter(bus=bus, device=found)
        with pytest.raises(BadDeviceData,
                           match="point W: required but its scale factor W_SF not implemented"):
            await pv.read()
        served.set_register(1, address(found, 103, "W_SF"), 0)
        served.set_register(1, address(found, 103, "WH_SF"), 0x8000)  # optional: unavailable
        r = await pv.read()
        assert (r.power_w, r.energy_wh) == (-2500, None)


async def test_an_unknown_enumeration_value_in_a_point_the_driver_reads_fails_the_poll() -> None:
    async with device(*inverter(103)) as (served, bus, found):
        pv = PvInverter(bus=bus, device=found)
        await pv.read()
        served.set_register(1, address(found, 123, "WMaxLim_Ena"), 7)
        with pytest.raises(ImplausibleReading, match="123 WMaxLim_Ena: 7 is none of its symbols"):
            await pv.read()
