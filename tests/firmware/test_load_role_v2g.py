"""The load role of a bidirectional (V2G) charger: it serves the car's SoC and pack, takes a
discharge setpoint no higher than it can feed back, drops it when the revert timer runs out, and
does the same on real MicroPython, line for line. A charger built without V2G leaves those points
not implemented and refuses a discharge write."""

import contextlib
import io

import pytest

from firmware.roles.common import RoleError
from firmware.roles.load import APPLIANCE, DEFAULT, LIMITED
from tests.firmware.test_load_role import _load, _read, _write
from tests.firmware.test_metering import run_micropython


def test_a_v2g_charger_serves_its_car_and_feeds_back_until_the_timer_runs_out():
    bank, clock, stage, role = _load(max_dis_w=5000)
    stage.connected, stage.soc_x10, stage.capacity_wh = True, 623, 40_000
    role.tick()
    assert [_read(bank, n) for n in ("SoC", "WhRtg", "WDisMax", "WDisSet", "WDis")] == [
        623, 40_000, 5000, 0, 0]  # raw: SoC in 0.1 %
    assert _write(bank, "WDisSet", 5001) == 3 and stage.discharge_set_w == 0  # past WDisMax
    assert _write(bank, "RvrtTms", 60) == 0
    assert _write(bank, "WDisSet", 3000) == 0
    assert (stage.discharge_set_w, role.state) == (3000, LIMITED)
    clock.now_ms += 59_000
    role.tick()
    assert stage.discharge_set_w == 3000
    clock.now_ms += 2_000
    role.tick()
    assert (stage.discharge_set_w, _read(bank, "WDisSet"), role.state) == (0, 0, DEFAULT)


def test_without_a_car_or_a_believable_pack_the_soc_is_not_implemented():
    bank, _, stage, role = _load(max_dis_w=5000)
    stage.connected, stage.soc_x10, stage.capacity_wh = False, 500, 40_000
    role.tick()
    assert (_read(bank, "SoC"), _read(bank, "WhRtg")) == (None, None)
    stage.connected, stage.soc_x10 = True, 1_500  # past full: the car's BMS is not believed
    role.tick()
    assert (_read(bank, "SoC"), _read(bank, "WhRtg")) == (None, None)


def test_a_charge_only_charger_leaves_the_v2g_points_unimplemented_and_refuses_a_discharge():
    bank, _, stage, role = _load()
    role.tick()
    assert [_read(bank, n) for n in ("SoC", "WhRtg", "WDisMax", "WDisSet", "WDis")] == [
        None] * 5
    assert _write(bank, "WDisSet", 1000) == 2 and stage.discharge_set_w == 0


@pytest.mark.parametrize("nameplate", [{"max_dis_w": -1}, {"max_dis_w": 65535},
                                       {"kind": APPLIANCE, "max_w": 2000, "max_dis_w": 100}])
def test_a_discharge_nameplate_that_cannot_be_is_refused(nameplate):
    with pytest.raises(RoleError, match="max_dis_w"):
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
                max_w=7400, max_dis_w=5000)
base = table[64220][0]

def write(offset, *words):
    return bank.write(base + offset, struct.pack(">%dH" % len(words), *words))

def show(label):
    print(label, stage.limit_w, stage.discharge_set_w, [bank.get(base + i) for i in range(21)])

stage.connected, stage.need_wh, stage.deadline_min = True, 7000, 450
stage.soc_x10, stage.capacity_wh, stage.discharge_w = 600, 40000, 0
role.tick()
show("default")
print("refused", write(19, 5001), "ok", write(9, 30), write(19, 2500))
show("feeding")
clock.now_ms = 31000
role.tick()
show("reverted")
"""


def test_the_v2g_role_runs_the_same_on_real_micropython(tmp_path):
    cpython = io.StringIO()
    with contextlib.redirect_stdout(cpython):
        exec(compile(SCENARIO, "scenario", "exec"), {})  # noqa: S102 - our own scenario
    expected = cpython.getvalue().splitlines()
    assert expected[0].startswith("default None 0") and expected[1] == "refused 3 ok 0 0"
    assert expected[2].startswith("feeding None 2500")
    assert expected[3].startswith("reverted None 0")
    assert run_micropython(tmp_path, SCENARIO) == expected
