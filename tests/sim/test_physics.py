"""Physics properties: SoC window, exact energy conservation, determinism, specific errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim_devices.home import (
    HomeProfiles,
    HomeSpec,
    energy_imbalance_mj,
    home_initial,
    home_step,
)
from sim_devices.physics import (
    BatterySpec,
    PhysicsError,
    SeededProfile,
    battery_initial,
    battery_step,
)
from sim_devices.world import World

SPEC = BatterySpec(capacity_wh=5000, max_charge_w=3000, max_discharge_w=2500,
                   soc_min_pct=10.0, soc_max_pct=90.0)


@settings(max_examples=200, deadline=None)
@given(soc=st.floats(0, 100), commands=st.lists(
    st.tuples(st.integers(-10_000, 10_000), st.integers(1, 600_000)), min_size=1, max_size=40))
def test_battery_stays_in_window_and_limits_and_conserves(soc, commands):
    state = battery_initial(SPEC, soc_pct=soc)
    for command_w, dt_ms in commands:
        before = state.stored_mj
        state = battery_step(SPEC, state, command_w=command_w, dt_ms=dt_ms)
        assert SPEC.floor_mj <= state.stored_mj <= SPEC.ceiling_mj
        assert -SPEC.max_discharge_w <= state.power_w <= SPEC.max_charge_w
        # Terminal energy = change in the cells + losses, to the millijoule.
        assert state.power_w * dt_ms == state.stored_mj - before + state.loss_mj
        assert state.loss_mj >= 0
        # The battery only ever does less than asked, in the asked direction.
        assert abs(state.power_w) <= abs(command_w)
        assert state.power_w * command_w >= 0


def test_full_battery_refuses_charge_and_empty_refuses_discharge():
    full = battery_initial(SPEC, soc_pct=100)
    assert battery_step(SPEC, full, command_w=3000, dt_ms=1000).power_w == 0
    empty = battery_initial(SPEC, soc_pct=0)
    assert battery_step(SPEC, empty, command_w=-3000, dt_ms=1000).power_w == 0
    assert empty.soc_pct(SPEC) == pytest.approx(10.0)


def test_home_conserves_energy_at_every_step_over_a_day():
    spec = HomeSpec(name="h", pv_peak_w=5000, base_load_w=600, battery_wh=8000,
                    battery_max_w=2500, soc_start_pct=40, flex_w=1200, flex_wh=2000)
    profiles = HomeProfiles(spec, world_seed=7)
    state = start = home_initial(spec, t_ms=0)
    for i in range(24 * 60):
        command = (2500, -2500, 0, 1000)[(i // 90) % 4]
        prev = state
        state = home_step(spec, profiles, state, dt_ms=60_000, battery_command_w=command,
                          pv_limit_w=None if i % 200 else 800)
        assert energy_imbalance_mj(prev, state) == 0
        assert state.meter.power_w == (state.load_w + state.battery.power_w - state.pv.power_w)
    assert energy_imbalance_mj(start, state) == 0
    # The day really exercised everything: sun, export, import, flexible load, losses.
    assert state.pv.energy_mj > 0 and state.meter.export_mj > 0 and state.meter.import_mj > 0
    assert state.flex.remaining_mj == 0 and state.loss_mj > 0


def test_load_has_morning_and_evening_peaks_and_pv_sleeps_at_night():
    spec = HomeSpec(name="h", cloudiness=0.0)
    profiles = HomeProfiles(spec, world_seed=1)
    hour = 3_600_000
    night, morning, noon, evening = (profiles.base_load_w(spec, int(h * hour))
                                     for h in (3, 7.5, 13, 19))
    assert morning > night and evening > noon and evening > morning
    assert profiles.pv_available_w(spec, 2 * hour) == 0
    assert profiles.pv_available_w(spec, 13 * hour) > 0.9 * spec.pv_peak_w


def _trajectory(seed):
    world = World(homes=[HomeSpec(name="a"), HomeSpec(name="b", cloudiness=0.8)], seed=seed,
                  start_s=9 * 3600, dt_ms=10_000)
    out = []
    for _ in range(200):
        world.step()
        out.append(tuple((h.pv.power_w, h.meter.power_w, h.state.battery.stored_mj)
                         for h in world.homes))
    return out


def test_same_seed_same_world_and_other_seed_other_clouds():
    assert _trajectory(3) == _trajectory(3)
    assert _trajectory(3) != _trajectory(4)


def test_profile_value_does_not_depend_on_step_size():
    a = SeededProfile(seed=5, low=0.2, high=1.0)
    b = SeededProfile(seed=5, low=0.2, high=1.0)
    coarse = [a.at(t) for t in range(0, 10_000_000, 1_000_000)]
    for t in range(0, 10_000_000, 250_000):
        b.at(t)
    assert coarse == [b.at(t) for t in range(0, 10_000_000, 1_000_000)]
    assert all(0.2 <= v <= 1.0 for v in coarse)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"battery_wh": 0}, "capacity_wh"),
    ({"soc_min_pct": 90, "soc_max_pct": 20}, "SoC window"),
    ({"charge_efficiency": 1.5}, "charge_efficiency"),
    ({"cloudiness": 2}, "cloudiness"),
    ({"flex_wh": 100}, "power_w"),
])
def test_bad_home_spec_names_the_problem(kwargs, message):
    with pytest.raises(PhysicsError, match=message):
        HomeSpec(name="h", **kwargs)


def test_bad_world_names_the_problem():
    with pytest.raises(PhysicsError, match="unique"):
        World(homes=[HomeSpec(name="a"), HomeSpec(name="a")])
    with pytest.raises(PhysicsError, match="speed"):
        World(homes=[HomeSpec(name="a")], speed=0)
