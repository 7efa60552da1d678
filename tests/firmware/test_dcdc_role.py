"""The DC-DC converter role (vendor model 64200 + 714) on a fake clock and stage: modes, checked
setpoints, reversion, protection; and the same scenario on real MicroPython, line for line."""

import contextlib
import io
import struct

import pytest

from firmware.hal.fake import FakeClock, FakeDcStage
from firmware.modbus.bank import RegisterBank
from firmware.roles.common import DEFAULT_REVERT_S, Points, RoleError
from firmware.roles.dcdc import (
    CC_CHARGE,
    CC_DISCHARGE,
    CV,
    OVER_CURRENT,
    OVER_VOLTAGE,
    REVERTED,
    TRIPPED,
    UNDER_VOLTAGE,
    WAIT,
    DcdcRole,
)
from protocols.sunspec.devices import DeviceMap
from protocols.sunspec.points import decode
from sim_devices.world import point_table
from tests.firmware.test_metering import run_micropython

DM = DeviceMap.for_role("dcdc")


class Port:
    def sample(self):
        return -1030, 512, -2012


def _converter(**nameplate):
    bank = RegisterBank(DM.base, DM.size)
    for addr, value in DM.fixed_registers().items():
        bank.set(addr, value)
    clock, stage = FakeClock(5_000), FakeDcStage()
    role = DcdcRole(Points(bank, point_table(DM)), stage=stage, clock=clock, serial="c1",
                    port=Port(), **nameplate)
    return bank, clock, stage, role


def _write(bank, name, *words):
    return bank.write(DM.address(64200, name), struct.pack(f">{len(words)}H", *words))


def _read(bank, model, name):
    point = DM.point(model, name)
    return decode(point, [bank.get(DM.address(model, name) + i) for i in range(point.size)])


def _measure(stage, role, *, v_x10=3500, a_x100=0, tripped=False):
    stage.bus_v_x10, stage.a_x100, stage.w, stage.tripped = v_x10, a_x100, 0, tripped
    role.tick()


def test_power_up_is_wait_with_the_nameplate_and_both_ports_described():
    bank, _, stage, _ = _converter(rated_a_x100=1500)
    assert (stage.mode, stage.a_set_x100) == (WAIT, 0)
    assert [_read(bank, 64200, n) for n in ("Mode", "St", "Trip", "ASet", "VSet", "AMax", "VMin",
                                            "VMax", "RvrtRem", "A_SF", "V_SF", "W_SF")] == [
        WAIT, WAIT, 0, 0, 3500, 1500, 3200, 3800, 0, -2, -1, 0]
    assert _read(bank, 1, "Md") == "gridpeer-dcdc" and _read(bank, 1, "SN") == "c1"
    assert _read(bank, 714, "NPrt") == 2
    assert (_read(bank, 714, "Prt[0].PrtTyp"), _read(bank, 714, "Prt[1].PrtTyp")) == (1, 6)
    assert _read(bank, 714, "Prt[0].DCV") == 512 and _read(bank, 714, "Prt[0].DCW") == -1030
    assert _read(bank, 714, "Prt[1].DCV") == 3500 and _read(bank, 714, "Prt[1].DCSta") == 0


def test_modes_command_the_stage_as_the_gateway_driver_writes_them():
    bank, _, stage, role = _converter()
    # DcDcConverter.set_current(amps=-5.5): RvrtTms alone, then Mode + ASet in one request.
    assert _write(bank, "RvrtTms", 30) == 0 and stage.mode == WAIT
    assert _write(bank, "Mode", CC_DISCHARGE, 550) == 0
    assert (stage.mode, stage.a_set_x100) == (CC_DISCHARGE, 550)
    assert _read(bank, 64200, "St") == CC_DISCHARGE and _read(bank, 64200, "RvrtRem") == 30
    # hold_voltage(volts=360): Mode, ASet 0, VSet; the master's limit is AMax.
    assert _write(bank, "Mode", CV, 0, 3600) == 0
    assert (stage.mode, stage.a_set_x100, stage.v_set_x10) == (CV, 2000, 3600)
    # A new ASet alone changes a running CC setpoint.
    assert _write(bank, "Mode", CC_CHARGE, 100) == 0
    assert _write(bank, "ASet", 700) == 0 and stage.a_set_x100 == 700
    # wait(): Mode 0, ASet 0.
    assert _write(bank, "Mode", WAIT, 0) == 0
    assert (stage.mode, stage.a_set_x100) == (WAIT, 0) and role.state == WAIT
    _measure(stage, role)
    assert _read(bank, 64200, "RvrtRem") == 0


@pytest.mark.parametrize(("point", "words"), [
    ("Mode", (4,)), ("Mode", (CC_CHARGE, 2001)), ("ASet", (2001,)), ("AMax", (2001,)),
    ("VSet", (3900,)), ("VMax", (3200,)), ("VMin", (3600,)), ("Mode", (CV, 0, 3100)),
    ("Mode", (0xFFFF,))])
def test_a_bad_setpoint_is_refused_whole_and_the_running_one_stays(point, words):
    bank, _, stage, _ = _converter()
    assert _write(bank, "Mode", CC_CHARGE, 500) == 0
    before = [bank.get(DM.address(64200, "Mode") + i) for i in range(16)]
    assert _write(bank, point, *words) == 3
    assert [bank.get(DM.address(64200, "Mode") + i) for i in range(16)] == before
    assert (stage.mode, stage.a_set_x100) == (CC_CHARGE, 500)


def test_read_only_points_refuse_writes():
    bank, _, _, _ = _converter()
    for name in ("St", "Trip", "DCV", "RvrtRem"):
        assert _write(bank, name, 1) == 2
    assert bank.write(DM.address(714, "Prt[0].DCV"), b"\x00\x01") == 2


def test_setpoint_holds_while_refreshed_and_reverts_to_wait_at_the_deadline():
    bank, clock, stage, role = _converter()
    _write(bank, "RvrtTms", 60)
    _write(bank, "Mode", CC_DISCHARGE, 800)
    for _ in range(5):  # refreshed every 50 s with ASet alone: never reverts
        clock.now_ms += 50_000
        _measure(stage, role)
        assert stage.mode == CC_DISCHARGE
        assert _write(bank, "ASet", 800) == 0
    clock.now_ms += 59_999
    _measure(stage, role)
    assert stage.mode == CC_DISCHARGE and _read(bank, 64200, "RvrtRem") == 1
    clock.now_ms += 1
    _measure(stage, role)
    assert (stage.mode, stage.a_set_x100) == (WAIT, 0)
    assert [_read(bank, 64200, n) for n in ("St", "Trip", "Mode", "ASet", "RvrtRem")] == [
        WAIT, REVERTED, WAIT, 0, 0]
    assert _write(bank, "Mode", CV) == 0 and _read(bank, 64200, "Trip") == 0


def test_revert_time_zero_means_the_device_default():
    bank, clock, stage, role = _converter()
    _write(bank, "Mode", CV)
    clock.now_ms += DEFAULT_REVERT_S * 1000 - 1
    _measure(stage, role)
    assert stage.mode == CV
    clock.now_ms += 1
    _measure(stage, role)
    assert stage.mode == WAIT


@pytest.mark.parametrize(("reading", "bit"), [
    ({"v_x10": 3801}, OVER_VOLTAGE), ({"v_x10": 3199}, UNDER_VOLTAGE),
    ({"a_x100": -2001}, OVER_CURRENT), ({"tripped": True, "v_x10": 3700}, OVER_VOLTAGE),
    ({"tripped": True, "v_x10": 3300}, UNDER_VOLTAGE)])
def test_protection_trips_to_wait_and_only_a_mode_write_restarts(reading, bit):
    bank, _, stage, role = _converter()
    _write(bank, "Mode", CC_DISCHARGE, 1000)
    _measure(stage, role, **reading)
    assert stage.mode == WAIT and role.state == TRIPPED
    assert (_read(bank, 64200, "St"), _read(bank, 64200, "Trip")) == (TRIPPED, bit)
    assert _read(bank, 64200, "Mode") == CC_DISCHARGE  # what was asked stays visible
    assert _read(bank, 714, "Prt[1].DCSta") == 3  # ERROR
    assert _write(bank, "ASet", 500) == 0 and stage.mode == WAIT  # a setpoint is not a restart
    _measure(stage, role)
    assert _write(bank, "Mode", CC_DISCHARGE) == 0
    assert (stage.mode, stage.a_set_x100, _read(bank, 64200, "Trip")) == (CC_DISCHARGE, 500, 0)


def test_a_converter_started_on_a_bus_outside_its_window_arms_once_the_bus_is_back():
    bank, _, stage, role = _converter()
    _measure(stage, role, v_x10=3850, tripped=True)  # waiting on a tripped bus: no trip
    assert role.state == WAIT and _read(bank, 64200, "Trip") == 0
    _write(bank, "Mode", CV)
    _measure(stage, role, v_x10=3820, tripped=True)  # the master brings it back...
    assert role.state == CV
    _measure(stage, role, v_x10=3500)  # ...and is armed once inside
    _measure(stage, role, v_x10=3810)
    assert role.state == TRIPPED and _read(bank, 64200, "Trip") == OVER_VOLTAGE


def test_bad_nameplate_names_the_problem():
    with pytest.raises(RoleError, match="rated_a_x100"):
        _converter(rated_a_x100=0)
    with pytest.raises(RoleError, match="v_min"):
        _converter(v_min_x10=3600)


# The scenario below runs unchanged on CPython and on the MicroPython WebAssembly port: the role
# on the board's own register bank, driven through the bank as a gateway's writes arrive.
SCENARIO = """
import struct
from firmware.board import build_bank
from firmware.hal.fake import FakeClock, FakeDcStage
from firmware.roles.common import Points
from firmware.roles.dcdc import DcdcRole

bank, table, _ = build_bank("dcdc")
clock, stage = FakeClock(0), FakeDcStage()
role = DcdcRole(Points(bank, table), stage=stage, clock=clock, serial="mp-1",
                rated_a_x100=1000)
base = table[64200][0]

def write(offset, *words):
    return bank.write(base + offset, struct.pack(">%dH" % len(words), *words))

def show(label):
    regs = [bank.get(base + i) for i in range(18)]
    print(label, stage.mode, stage.a_set_x100, stage.v_set_x10, regs)

print("refused", write(2, 2, 1001), write(4, 3900), write(2, 7))
print("ok", write(8, 20), write(2, 3, 800))
show("cc")
clock.now_ms = 10000
stage.w, stage.bus_v_x10, stage.a_x100 = -2800, 3502, -800
role.tick()
show("running")
clock.now_ms = 20000
role.tick()
show("reverted")
write(2, 1, 0, 3500)
stage.bus_v_x10 = 3811
role.tick()
show("tripped")
"""


def test_the_role_runs_the_same_on_real_micropython(tmp_path):
    cpython = io.StringIO()
    with contextlib.redirect_stdout(cpython):
        exec(compile(SCENARIO, "scenario", "exec"), {})  # noqa: S102 - our own scenario
    expected = cpython.getvalue().splitlines()
    assert expected[0] == "refused 3 3 3" and expected[1] == "ok 0 0"
    assert expected[-1].startswith("tripped 0 0 3500")
    assert run_micropython(tmp_path, SCENARIO) == expected
