"""The controllable load role (vendor model 64220) on a fake clock and stage: what it reports,
checked limits, reversion to the device's own default; and the same scenario on real
MicroPython, line for line."""

import contextlib
import io
import struct

import pytest

from firmware.hal.fake import FakeClock, FakeLoadStage
from firmware.modbus.bank import RegisterBank
from firmware.roles.common import DEFAULT_REVERT_S, Points, RoleError
from firmware.roles.load import APPLIANCE, DEFAULT, EVSE, LIMITED, LoadRole
from protocols.sunspec.devices import DeviceMap
from protocols.sunspec.points import decode
from sim_devices.world import point_table
from tests.firmware.test_metering import run_micropython

DM = DeviceMap.for_role("load")


def _load(**nameplate):
    bank = RegisterBank(DM.base, DM.size)
    for addr, value in DM.fixed_registers().items():
        bank.set(addr, value)
    clock, stage = FakeClock(1_000), FakeLoadStage()
    role = LoadRole(Points(bank, point_table(DM)), stage=stage, clock=clock, serial="ev1",
                    **({"kind": EVSE, "max_w": 7400} | nameplate))
    return bank, clock, stage, role


def _write(bank, name, *words):
    return bank.write(DM.address(64220, name), struct.pack(f">{len(words)}H", *words))


def _read(bank, name, model=64220):
    point = DM.point(model, name)
    return decode(point, [bank.get(DM.address(model, name) + i) for i in range(point.size)])


def test_power_up_runs_on_the_device_default_and_reports_its_nameplate():
    bank, _, stage, _ = _load()
    assert stage.limit_w is None
    assert [_read(bank, n) for n in ("Kind", "Conn", "WhNeed", "Dline", "WMax", "WLim",
                                     "RvrtTms", "RvrtRem", "St", "W", "TotWh")] == [
        EVSE, 0, 0, None, 7400, 7400, 0, 0, DEFAULT, 0, None]  # acc32 0: "none yet"
    assert _read(bank, "Md", 1) == "gridpeer-load" and _read(bank, "SN", 1) == "ev1"


def test_readings_come_from_the_stage_and_the_deadline_only_while_connected():
    bank, _, stage, role = _load()
    stage.w, stage.connected, stage.need_wh, stage.deadline_min, stage.total_wh = (
        7400, True, 21_500, 420, 123_456)
    role.tick()
    assert [_read(bank, n) for n in ("Conn", "WhNeed", "Dline", "W", "TotWh")] == [
        1, 21_500, 420, 7400, 123_456]
    stage.connected, stage.w = False, 0
    role.tick()
    assert (_read(bank, "Conn"), _read(bank, "Dline")) == (0, None)


def test_a_limit_write_limits_the_stage_until_its_revert_time_then_the_default_returns():
    bank, clock, stage, role = _load()
    assert _write(bank, "WLim", 1500, 120) == 0  # WLim and RvrtTms in one request
    assert stage.limit_w == 1500 and _read(bank, "St") == LIMITED
    clock.now_ms += 119_000
    role.tick()
    assert stage.limit_w == 1500 and _read(bank, "RvrtRem") == 1
    clock.now_ms += 1_000
    role.tick()
    assert stage.limit_w is None
    assert (_read(bank, "St"), _read(bank, "WLim"), _read(bank, "RvrtRem")) == (DEFAULT, 7400, 0)


def test_revert_time_zero_is_the_device_default_never_forever():
    bank, clock, stage, role = _load()
    assert _write(bank, "WLim", 0, 0) == 0
    assert stage.limit_w == 0
    clock.now_ms += DEFAULT_REVERT_S * 1000
    role.tick()
    assert stage.limit_w is None and _read(bank, "St") == DEFAULT


def test_a_limit_above_the_maximum_is_refused_and_nothing_changes():
    bank, _, stage, _ = _load(max_w=3000)
    assert _write(bank, "WLim", 2000, 60) == 0
    assert _write(bank, "WLim", 3001, 600) == 3  # illegal data value, rolled back
    assert stage.limit_w == 2000
    assert (_read(bank, "WLim"), _read(bank, "RvrtTms")) == (2000, 60)
    assert _write(bank, "St", 0) == 2  # read-only


@pytest.mark.parametrize(("nameplate", "problem"), [
    ({"kind": 3}, "load kind must be"),
    ({"kind": APPLIANCE, "max_w": 0}, "max_w must be in 1..65534"),
    ({"max_w": 70_000}, "max_w must be in 1..65534"),
])
def test_a_nameplate_no_load_has_is_refused(nameplate, problem):
    with pytest.raises(RoleError, match=problem):
        _load(**nameplate)


SCENARIO = """
import struct
from firmware.board import build_bank
from firmware.hal.fake import FakeClock, FakeLoadStage
from firmware.roles.common import Points
from firmware.roles.load import LoadRole

bank, table, _ = build_bank("load")
clock, stage = FakeClock(0), FakeLoadStage()
role = LoadRole(Points(bank, table), stage=stage, clock=clock, serial="mp-ev", kind=2,
                max_w=7400)
base = table[64220][0]

def write(offset, *words):
    return bank.write(base + offset, struct.pack(">%dH" % len(words), *words))

def show(label):
    print(label, stage.limit_w, [bank.get(base + i) for i in range(15)])

stage.w, stage.connected, stage.need_wh, stage.deadline_min = 7400, True, 70000, 420
role.tick()
show("default")
print("refused", write(8, 7401, 30), "ok", write(8, 2000, 30))
show("limited")
clock.now_ms = 30000
role.tick()
show("reverted")
"""


def test_the_role_runs_the_same_on_real_micropython(tmp_path):
    cpython = io.StringIO()
    with contextlib.redirect_stdout(cpython):
        exec(compile(SCENARIO, "scenario", "exec"), {})  # noqa: S102 - our own scenario
    expected = cpython.getvalue().splitlines()
    assert expected[0].startswith("default None") and expected[1] == "refused 3 ok 0"
    assert expected[2].startswith("limited 2000") and expected[3].startswith("reverted None")
    assert run_micropython(tmp_path, SCENARIO) == expected
