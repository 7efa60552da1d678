"""Role code and HAL, sans-I/O: the firmware's reversion and setpoint rules on a fake clock.

Plain functions over firmware objects, so the same checks can run on a board.
"""

import struct

import pytest

from firmware.hal.fake import FakeBatteryStage, FakeClock, FakePin, FakePvStage, FakeUart
from firmware.hal.rs485 import Rs485
from firmware.modbus.bank import RegisterBank
from firmware.roles.battery import BatteryRole
from firmware.roles.common import DEFAULT_REVERT_S, Points, RoleError
from firmware.roles.pv import PvRole
from protocols.sunspec.devices import DeviceMap
from protocols.sunspec.points import decode
from sim_devices.world import point_table


def _device(role):
    dm = DeviceMap.for_role(role)
    bank = RegisterBank(dm.base, dm.size)
    for addr, value in dm.fixed_registers().items():
        bank.set(addr, value)
    return dm, bank, Points(bank, point_table(dm))


def _battery(clock):
    dm, bank, points = _device("battery")
    stage = FakeBatteryStage()
    role = BatteryRole(points, stage=stage, clock=clock, serial="b1", capacity_wh=10000,
                       max_charge_w=3000, max_discharge_w=2000, soc_min_pct=10, soc_max_pct=95)
    return dm, bank, stage, role


def _write(bank, dm, model, name, *words):
    return bank.write(dm.address(model, name), struct.pack(f">{len(words)}h", *words))


def test_battery_setpoint_holds_while_refreshed_and_reverts_at_the_deadline():
    clock = FakeClock(1_000_000)
    dm, bank, stage, role = _battery(clock)
    assert _write(bank, dm, 124, "InOutWRte_RvrtTms", 60) == 0
    assert _write(bank, dm, 124, "OutWRte", 5000, 0) == 0  # OutWRte, InWRte in one request
    assert _write(bank, dm, 124, "StorCtl_Mod", 2) == 0
    assert stage.command_w == -1000
    for _ in range(10):  # refreshed every 50 s for 500 s: never reverts
        clock.now_ms += 50_000
        role.tick()
        assert stage.command_w == -1000
        assert _write(bank, dm, 124, "StorCtl_Mod", 2) == 0
    clock.now_ms += 59_999
    role.tick()
    assert stage.command_w == -1000
    clock.now_ms += 1
    role.tick()
    assert stage.command_w == 0
    assert bank.get(dm.address(124, "StorCtl_Mod")) == 0


def test_revert_time_zero_means_device_default_not_forever():
    clock = FakeClock()
    dm, bank, stage, role = _battery(clock)
    _write(bank, dm, 124, "InWRte", 10000)
    _write(bank, dm, 124, "StorCtl_Mod", 1)
    assert stage.command_w == 3000
    clock.now_ms += DEFAULT_REVERT_S * 1000
    role.tick()
    assert stage.command_w == 0


def test_battery_both_bits_and_negative_inwrte():
    clock = FakeClock()
    dm, bank, stage, _ = _battery(clock)
    _write(bank, dm, 124, "OutWRte", 2500, 5000)
    _write(bank, dm, 124, "StorCtl_Mod", 3)
    assert stage.command_w == 1500 - 500
    _write(bank, dm, 124, "StorCtl_Mod", 1)
    _write(bank, dm, 124, "InWRte", -5000)
    assert stage.command_w == -1500


def test_battery_publishes_soc_and_state_from_the_hal():
    clock = FakeClock()
    dm, bank, stage, role = _battery(clock)
    stage.w, stage.soc_pct_x100 = -700, 4321
    role.tick()
    read = lambda m, n: decode(dm.point(m, n), [bank.get(dm.address(m, n) + i)  # noqa: E731
                                                for i in range(dm.point(m, n).size)])
    assert read(802, "SoC") == 4321 and read(713, "SoC") == 4321 and read(124, "ChaState") == 4321
    assert read(802, "W") == -700 and read(124, "ChaSt") == 3  # DISCHARGING
    assert read(802, "SoC_SF") == -2 and read(124, "InOutWRte_SF") == -2


def test_read_only_points_stay_read_only():
    clock = FakeClock()
    dm, bank, _, _ = _battery(clock)
    assert _write(bank, dm, 802, "SoC", 100) == 2  # illegal data address
    assert _write(bank, dm, 124, "ChaState", 100) == 2


def test_pv_wset_caps_output_and_reverts_to_its_reversion_value():
    clock = FakeClock()
    dm, bank, points = _device("pv")
    stage = FakePvStage()
    role = PvRole(points, stage=stage, clock=clock, serial="p1", rating_w=5000)
    assert stage.limit_w is None
    assert bank.write(dm.address(704, "WSetRvrtTms"), struct.pack(">I", 30)) == 0
    assert bank.write(dm.address(704, "WSet"), struct.pack(">i", 1200)) == 0
    assert bank.write(dm.address(704, "WSetEna"), struct.pack(">H", 1)) == 0
    assert stage.limit_w == 1200
    assert bank.write(dm.address(704, "WMaxLimPctEna"), struct.pack(">HH", 1, 2000)) == 0
    assert stage.limit_w == 1000  # the smaller of 20 % of 5000 W and WSet
    assert bank.write(dm.address(704, "WSet"), struct.pack(">i", -1)) == 3
    clock.now_ms += 30_000
    role.tick()
    assert stage.limit_w == 1000  # WSet reverted; WMaxLimPct's own timer still runs
    clock.now_ms += DEFAULT_REVERT_S * 1000
    role.tick()
    assert stage.limit_w is None


def test_role_rejects_a_nameplate_it_cannot_serve():
    _, _, points = _device("battery")
    with pytest.raises(RoleError, match="capacity_wh"):
        BatteryRole(points, stage=FakeBatteryStage(), clock=FakeClock(), serial="b",
                    capacity_wh=0, max_charge_w=1, max_discharge_w=1, soc_min_pct=0,
                    soc_max_pct=100)
    with pytest.raises(RoleError, match="serial"):
        PvRole(_device("pv")[2], stage=FakePvStage(), clock=FakeClock(), serial="",
               rating_w=100)


def test_rs485_drives_the_bus_only_while_its_frame_is_on_the_wire():
    uart = FakeUart()
    de = FakePin(uart)
    slept = []
    port = Rs485(uart, de, 9600, sleep=slept.append)
    uart.inject(b"\x01\x03")
    assert port.read() == b"\x01\x03" and port.read() is None
    port.write(b"\x01\x03\x02\x00\x07\xf9\x86")
    # Low at start, high before the first byte, low only after flush and one character time.
    assert de.history == [(0, 0), (1, 0), (0, 7)]
    assert uart.flushed == 1 and slept == [1146]
    with pytest.raises(ValueError, match="baud"):
        Rs485(uart, de, 0)
