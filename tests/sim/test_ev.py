"""EV physics: the plug-in window across midnight, charging to the target, limits, exact energy."""

import pytest

from sim_devices.ev import EvSpec, EvState, ev_initial, ev_step
from sim_devices.physics import MJ_PER_WH, PhysicsError

HOUR = 3_600_000
SPEC = EvSpec(battery_wh=40_000, max_charge_w=7_400, arrival_h=18.0, departure_h=7.5,
              arrival_soc_pct=40.0, target_soc_pct=80.0, charge_efficiency=0.9)


def test_plug_in_window_wraps_midnight():
    assert [SPEC.plugged_at(int(h * HOUR)) for h in (12, 17.99, 18, 23, 0, 3, 7.49, 7.5)] == [
        False, False, True, True, True, True, True, False]
    day = EvSpec(battery_wh=1000, max_charge_w=1000, arrival_h=9, departure_h=17)
    assert [day.plugged_at(int(h * HOUR)) for h in (8, 9, 16.9, 17)] == [False, True, True, False]
    # The window repeats every day.
    assert SPEC.plugged_at(3 * 24 * HOUR + 20 * HOUR)


def test_two_days_of_charging_conserve_energy_and_reach_the_target():
    state = ev_initial(SPEC, t_ms=12 * HOUR)
    assert not state.plugged and state.stored_mj == SPEC.arrival_mj
    dt = 60_000
    into_cells = 0
    powers = []
    for i in range(2 * 24 * 60):
        t = 12 * HOUR + i * dt
        prev = state
        state = ev_step(SPEC, state, t_ms=t, dt_ms=dt)
        powers.append((t, state.power_w))
        drawn = state.energy_mj - prev.energy_mj
        assert drawn == state.power_w * dt
        if state.plugged and not prev.plugged:  # arrival: the day's driving happened off-grid
            prev = EvState(True, SPEC.arrival_mj, 0, prev.energy_mj, prev.loss_mj)
        # AC energy drawn = energy into the cells + charger losses, to the millijoule.
        assert drawn == (state.stored_mj - prev.stored_mj) + (state.loss_mj - prev.loss_mj)
        into_cells += state.stored_mj - prev.stored_mj
        assert 0 <= state.power_w <= SPEC.max_charge_w
        assert state.stored_mj <= SPEC.target_mj
        if not SPEC.plugged_at(t):
            assert state.power_w == 0
    # Each evening it charges from 40 % to exactly 80 %: 16 kWh into the cells, twice.
    assert into_cells == 2 * (SPEC.target_mj - SPEC.arrival_mj)
    assert state.energy_mj == into_cells + state.loss_mj
    assert round(state.loss_mj / MJ_PER_WH) == round(2 * 16_000 * (1 / 0.9 - 1))
    charging = [t for t, p in powers if p]
    assert charging[0] == 18 * HOUR  # starts on arrival at full power
    assert dict(powers)[18 * HOUR] == SPEC.max_charge_w
    # 16 kWh / 0.9 at 7.4 kW is about 2.4 h: done long before departure.
    assert max(t for t in charging if t < 36 * HOUR) < 21 * HOUR


def test_charging_limit_caps_power_and_zero_stops_it():
    state = ev_initial(SPEC, t_ms=19 * HOUR)
    assert state.plugged
    assert ev_step(SPEC, state, t_ms=19 * HOUR, dt_ms=1000, limit_w=3_000).power_w == 3_000
    assert ev_step(SPEC, state, t_ms=19 * HOUR, dt_ms=1000, limit_w=20_000).power_w == 7_400
    stopped = ev_step(SPEC, state, t_ms=19 * HOUR, dt_ms=1000, limit_w=0)
    assert stopped.power_w == 0 and stopped.stored_mj == state.stored_mj


def test_departure_leaves_whatever_the_soc():
    state = ev_initial(SPEC, t_ms=7 * HOUR)  # plugged, still at its arrival SoC
    state = ev_step(SPEC, state, t_ms=7 * HOUR, dt_ms=HOUR // 2, limit_w=1000)
    half_charged = state.stored_mj
    assert SPEC.arrival_mj < half_charged < SPEC.target_mj
    gone = ev_step(SPEC, state, t_ms=7 * HOUR + HOUR // 2, dt_ms=1000)
    assert not gone.plugged and gone.power_w == 0 and gone.stored_mj == half_charged


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"battery_wh": 0}, "battery_wh must be > 0"),
    ({"max_charge_w": -1}, "max_charge_w must be > 0"),
    ({"arrival_h": 24}, r"arrival_h must be in \[0, 24\)"),
    ({"arrival_h": 7.5}, "arrival_h and departure_h must differ"),
    ({"arrival_soc_pct": 90, "target_soc_pct": 80}, "arrival_soc_pct <= target_soc_pct"),
    ({"charge_efficiency": 0}, r"charge_efficiency must be in \(0, 1\]"),
])
def test_impossible_cars_are_refused_by_name(kwargs, match):
    fields = {"battery_wh": 40_000, "max_charge_w": 7_400} | kwargs
    with pytest.raises(PhysicsError, match=match):
        EvSpec(**fields)


def test_bad_step_inputs_are_refused():
    state = ev_initial(SPEC, t_ms=0)
    with pytest.raises(PhysicsError, match="dt_ms must be > 0"):
        ev_step(SPEC, state, t_ms=0, dt_ms=0)
    with pytest.raises(PhysicsError, match="limit_w must be >= 0"):
        ev_step(SPEC, state, t_ms=0, dt_ms=1000, limit_w=-5)
