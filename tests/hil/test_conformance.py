"""Device conformance: what a gateway needs from any device it drives, checked over Modbus.

Run against a real device with ``--hil-modbus tcp://HOST:PORT`` or ``--hil-serial /dev/ttyX``
(see ``tests/hil/options.py``); without either, against every simulated role over Modbus TCP and
over RTU on a pty. Every check goes through the gateway's own bus (pymodbus underneath), the same
discovery and the same drivers as a running gateway.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.devices import (
    Battery,
    ControllableLoad,
    DcDcConverter,
    ModbusException,
    PvInverter,
    read_models,
)
from gateway.devices.discovery import SUNSPEC_BASES, discover
from gateway.devices.model_writer import write_points
from protocols.sunspec.devices import ROLE_MODELS
from protocols.sunspec.points import to_raw
from tests.hil.device import (
    CONTROLLED,
    DeviceUnderTest,
    driver_command,
    invalid_value,
    setpoint_plan,
)

pytestmark = pytest.mark.hil

_SUNS = (0x5375, 0x6E53)
_END = (0xFFFF, 0)
_LONG_REVERT_S = 600
"""Revert time for the read-back checks: long enough that nothing reverts while they read."""


@contextlib.asynccontextmanager
async def left_safe(dut: DeviceUnderTest):
    """Return the device to its safe state after a check, whatever the check did."""
    try:
        yield
    finally:
        if dut.role == "battery":
            await Battery(bus=dut.bus, device=dut.device).set_power(watts=0, revert_s=60)
        elif dut.role == "pv":
            await PvInverter(bus=dut.bus, device=dut.device).clear_limit()
        elif dut.role == "dcdc":
            await DcDcConverter(bus=dut.bus, device=dut.device).wait(revert_s=60)
        elif dut.role == "load":  # no limit to lift: a full-power limit for 1 s, then its own
            load = ControllableLoad(bus=dut.bus, device=dut.device)
            await load.set_limit(watts=(await load.read()).max_w, revert_s=1)


async def test_sunspec_scan_finds_marker_model_chain_end_and_common_model(dut):
    base = dut.device.base_address
    assert base in SUNSPEC_BASES
    assert await dut.bus.read_registers(unit=dut.unit, address=base, count=2) == _SUNS
    address = base + 2
    for location in dut.device.chain:
        assert location.address == address, "models must follow each other without gaps"
        header = await dut.bus.read_registers(unit=dut.unit, address=address, count=2)
        assert header == (location.model_id, location.length)
        address += 2 + location.length
    assert await dut.bus.read_registers(unit=dut.unit, address=address, count=2) == _END
    assert dut.device.chain[0].model_id == 1, "SunSpec puts the common model first"
    common = dut.device.common
    assert common.manufacturer and common.model and common.serial
    # every model decodes whole: no point holds garbage the gateway would trip over later
    models = await read_models(dut.bus, unit=dut.unit, locations=dut.device.chain)
    problems = {mid: dict(m.problems) for mid, m in models.items() if m.problems}
    assert problems == {}
    if dut.simulated:
        assert tuple(loc.model_id for loc in dut.device.chain) == ROLE_MODELS[dut.role]


@pytest.mark.hil_roles(*CONTROLLED)
async def test_every_setpoint_is_written_and_read_back(dut):
    control = await dut.control()
    plan = setpoint_plan(dut.role, control, _LONG_REVERT_S)
    written = {}
    async with left_safe(dut):
        for name, value in plan:
            raw = to_raw(value, control.scale_factor(name))
            await write_points(dut.bus, unit=dut.unit, model=control, values={name: raw})
            written[name] = raw
        after = await dut.control()
    assert {name: after.raw_int(name) for name in written} == written


@pytest.mark.hil_roles(*CONTROLLED)
async def test_driver_commands_read_back_through_the_readings(dut):
    async with left_safe(dut):
        if dut.role == "battery":
            battery = Battery(bus=dut.bus, device=dut.device)
            limits = await battery.read()
            for watts in (limits.max_charge_w // 3, -limits.max_discharge_w // 4, 0):
                commanded = await battery.set_power(watts=watts, revert_s=_LONG_REVERT_S)
                reading = await battery.read()
                assert abs(commanded - watts) <= max(limits.max_charge_w,
                                                     limits.max_discharge_w) // 100
                assert (reading.setpoint_w, reading.revert_s) == (commanded, _LONG_REVERT_S)
        elif dut.role == "pv":
            pv = PvInverter(bus=dut.bus, device=dut.device)
            for pct in (70.0, 25.5):
                await pv.set_limit(pct=pct, revert_s=_LONG_REVERT_S)
                assert (await pv.read()).limit_pct == pct
            await pv.clear_limit()
            assert (await pv.read()).limit_pct is None
        elif dut.role == "load":
            load = ControllableLoad(bus=dut.bus, device=dut.device)
            max_w = (await load.read()).max_w
            for watts in (max_w // 2, 0):
                await load.set_limit(watts=watts, revert_s=_LONG_REVERT_S)
                reading = await load.read()
                assert (reading.limit_w, reading.limited) == (watts, True)
        else:
            converter = DcDcConverter(bus=dut.bus, device=dut.device)
            reading = await converter.read()
            volts = round((reading.bus_voltage_min_v + reading.bus_voltage_max_v) / 2)
            await converter.hold_voltage(volts=volts, revert_s=_LONG_REVERT_S)
            control = await dut.control()
            assert (control.value("Mode"), control.number("VSet")) == (1, volts)
            assert (await converter.read()).state.name == "CV"
            await converter.wait(revert_s=_LONG_REVERT_S)
            assert (await converter.read()).state.name == "WAIT"


@pytest.mark.hil_roles(*CONTROLLED)
async def test_a_setpoint_reverts_after_its_revert_time_and_not_before(dut):
    command = driver_command(dut)
    revert_s = dut.revert_s
    async with left_safe(dut):
        armed_by = dut.now_s()  # the device armed its timer after this moment
        await command.apply()
        deadline = armed_by + revert_s
        held_seen = False
        give_up = deadline + max(10.0, revert_s)
        while True:
            held = await command.held()
            seen_at = dut.now_s()  # the reading was taken before this moment
            if held:
                held_seen = True
                assert seen_at <= give_up, f"still held {seen_at - armed_by:.1f} s after the write"
            else:
                assert seen_at >= deadline - dut.resolution_s, (
                    f"reverted {seen_at - armed_by:.1f} s after the write, before {revert_s} s")
                break
            await asyncio.sleep(0.02)
    assert held_seen, "the command never showed in a reading"


async def test_an_invalid_write_is_answered_with_a_modbus_exception(dut):
    base = dut.device.base_address
    # a read-only register: the SunSpec marker itself
    with pytest.raises(ModbusException) as refused:
        await dut.bus.write_registers(unit=dut.unit, address=base, values=[0, 0])
    assert refused.value.function == 16
    if dut.simulated:
        assert refused.value.code == 2  # illegal data address
    if dut.role in CONTROLLED:
        before = await dut.control()
        name, value = invalid_value(dut.role, before)
        raw = to_raw(value, before.scale_factor(name))
        with pytest.raises(ModbusException) as bad_value:
            await write_points(dut.bus, unit=dut.unit, model=before, values={name: raw})
        if dut.simulated:
            assert bad_value.value.code == 3  # illegal data value
        after = await dut.control()
        assert after.raw_int(name) == before.raw_int(name), "a refused write must change nothing"
    # not a crash: the device still answers and its map is intact
    assert await dut.bus.read_registers(unit=dut.unit, address=base, count=2) == _SUNS
    assert (await discover(dut.bus, unit=dut.unit)).chain == dut.device.chain
