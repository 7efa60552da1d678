"""Controllable loads in the simulated home: an EV behind its charger and the flexible load, both
following a gateway's power limit written through their device's Modbus core (vendor model
64220), back on their own default when it expires, and energy kept to the millijoule."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.modbus.pdu import handle
from sim_devices.ev import EvSpec, ev_need_mj
from sim_devices.home import HomeSpec, energy_imbalance_mj
from sim_devices.physics import (
    MJ_PER_WH,
    FlexSpec,
    FlexState,
    PhysicsError,
    flex_step,
)
from sim_devices.world import World

EV = EvSpec(battery_wh=40_000, max_charge_w=7400, arrival_h=18.0, departure_h=7.5,
            arrival_soc_pct=40.0, target_soc_pct=90.0)
H = 3600.0


def _home(**fields):
    return HomeSpec(**({"name": "h", "pv_peak_w": 3000, "base_load_w": 400, "ev": EV,
                        "flex_w": 2000, "flex_wh": 3000} | fields))


def _limit(world: World, device: str, watts: int, revert_s: int, home: str = "h") -> int:
    """FC 16 of WLim and RvrtTms, the gateway driver's request, into the device's Modbus core;
    returns the function code of the reply (16, or 0x90 for an exception)."""
    dev = world.home(home).devices[device]
    pdu = struct.pack(">BHHBHH", 16, dev.map.address(64220, "WLim"), 2, 4, watts, revert_s)
    return handle(dev.bank, pdu)[0]


def _reg(world: World, device: str, name: str) -> int:
    dev = world.home("h").devices[device]
    return dev.bank.get(dev.map.address(64220, name))


def test_without_a_gateway_the_car_charges_at_full_power_as_soon_as_it_is_plugged_in():
    world = World(homes=[_home()], start_s=17.5 * H)
    world.advance(0.5 * H + 60)
    home = world.home("h")
    assert home.state.ev is not None and home.state.ev.plugged
    assert home.state.ev.power_w == 7400 and _reg(world, "ev", "St") == 0  # DEFAULT
    assert _reg(world, "ev", "Conn") == 1 and _reg(world, "ev", "Dline") == 450  # 07:30
    dev = home.devices["ev"]
    addr = dev.map.address(64220, "WhNeed")
    need_wh = dev.bank.get(addr) << 16 | dev.bank.get(addr + 1)
    assert need_wh == -(-ev_need_mj(EV, home.state.ev) // MJ_PER_WH) > 15_000


def test_the_charger_follows_the_limit_then_reverts_to_full_power():
    world = World(homes=[_home()], start_s=18 * H)
    assert _limit(world, "ev", 2000, 120) == 16
    world.advance(60)
    ev = world.home("h").state.ev
    assert ev is not None and ev.power_w == 2000 and _reg(world, "ev", "St") == 1
    assert world.home("h").hal_loads["ev"].limit_w == 2000
    assert _limit(world, "ev", 0, 120) == 16  # 0 defers
    world.advance(60)
    assert world.home("h").state.ev.power_w == 0
    world.advance(120)  # no refresh: back to the charger's own default
    assert world.home("h").state.ev.power_w == 7400 and _reg(world, "ev", "St") == 0
    assert _limit(world, "ev", 7401, 120) == 0x90  # above WMax: refused, nothing changes
    assert world.home("h").hal_loads["ev"].limit_w is None


def test_the_flexible_load_follows_the_limit_in_its_window_and_its_own_logic_without():
    world = World(homes=[_home(pv_peak_w=0)], start_s=10 * H)
    world.advance(60)
    assert world.home("h").state.flex.power_w == 0  # no surplus, deadline far: it waits
    assert _reg(world, "flex", "Conn") == 1 and _reg(world, "flex", "Dline") == 21 * 60
    assert _limit(world, "flex", 1500, 600) == 16
    world.advance(60)
    assert world.home("h").state.flex.power_w == 1500  # the gateway runs it now
    world.advance(600)
    assert world.home("h").state.flex.power_w == 0  # reverted: waits again on its own


def test_an_owed_job_reports_its_need_and_is_done_once_it_ran_it():
    world = World(homes=[_home(pv_peak_w=0, flex_wh=500)], start_s=10 * H)
    assert _limit(world, "flex", 2000, 3600) == 16
    world.advance(15 * 60 + 5)  # 500 Wh at 2 kW: 15 minutes
    home = world.home("h")
    assert home.state.flex.remaining_mj == 0 and home.state.flex.power_w == 0
    assert _reg(world, "flex", "Conn") == 0 and home.state.flex_mj == 500 * MJ_PER_WH


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ev", "flex"]), st.integers(0, 7400),
                          st.integers(1, 3600)), min_size=1, max_size=12),
       st.floats(0, 23.5))
def test_energy_is_kept_to_the_millijoule_whatever_the_limits(writes, start_h):
    world = World(homes=[_home()], start_s=start_h * H, dt_ms=20_000)
    home = world.home("h")
    start = prev = home.state
    for device, watts, revert in writes:
        _limit(world, device, min(watts, 2000) if device == "flex" else watts, revert)
        for _ in range(30):  # 10 simulated minutes between writes
            world.step()
            state = home.state
            assert energy_imbalance_mj(prev, state) == 0
            ev = state.ev
            assert ev is not None
            assert ev.power_w <= (home.hal_loads["ev"].limit_w or EV.max_charge_w)
            assert state.flex.power_w <= (home.hal_loads["flex"].limit_w or 2000)
            prev = state
    assert energy_imbalance_mj(start, prev) == 0
    # the car's own books: what it drew is what reached its cells plus the charger's losses
    ev0, ev1 = start.ev, prev.ev
    assert ev0 is not None and ev1 is not None and ev1.energy_mj >= ev0.energy_mj
    assert ev_need_mj(EV, ev1) >= 0


def test_flex_step_under_a_limit_never_draws_more_and_refuses_a_negative_one():
    spec = FlexSpec(power_w=2000, energy_wh=1000)
    state = FlexState(0, 1000 * MJ_PER_WH)
    t = 12 * 3_600_000
    assert flex_step(spec, state, t_ms=t, dt_ms=1000, surplus_w=0, limit_w=700).power_w == 700
    assert flex_step(spec, state, t_ms=t, dt_ms=1000, surplus_w=5000, limit_w=0).power_w == 0
    early = flex_step(spec, state, t_ms=6 * 3_600_000, dt_ms=1000, surplus_w=0, limit_w=2000)
    assert early.power_w == 0  # before its window, not even the gateway can run it
    with pytest.raises(PhysicsError, match="limit_w must be >= 0"):
        flex_step(spec, state, t_ms=t, dt_ms=1000, surplus_w=0, limit_w=-1)
