"""No setpoint ever leaves the safety envelope, whatever is requested."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.envelope import BatteryEnvelope

ENV = BatteryEnvelope(
    soc_min_pct=10, soc_max_pct=95, max_charge_w=5000, max_discharge_w=4000, ramp_w_per_s=500
)


@given(
    requested=st.integers(-10**9, 10**9),
    soc=st.floats(0, 100),
    previous=st.integers(-10**6, 10**6),
    dt=st.floats(0, 3600),
)
def test_clamped_setpoint_is_always_inside_the_envelope(requested, soc, previous, dt):
    w, hits = ENV.clamp(requested_w=requested, soc_pct=soc, previous_w=previous, dt_s=dt)
    assert ENV.contains(w=w, soc_pct=soc)
    if not hits:
        assert w == requested


def test_ramp_limits_the_step_and_names_the_reason():
    assert ENV.clamp(requested_w=5000, soc_pct=50, previous_w=0, dt_s=2) == (1000, ("ramp",))


def test_full_battery_refuses_charge_even_mid_ramp():
    assert ENV.clamp(requested_w=3000, soc_pct=95, previous_w=3000, dt_s=1) == (0, ("soc-max",))


def test_bad_window_is_refused():
    with pytest.raises(ValueError, match="SoC window"):
        BatteryEnvelope(
            soc_min_pct=90, soc_max_pct=10, max_charge_w=1, max_discharge_w=1, ramp_w_per_s=1
        )


_REPORTED = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from([0.0, 10.0, 50.0, 95.0, 100.0]))


@given(
    charge=st.floats(allow_nan=True, allow_infinity=True),
    discharge=st.floats(allow_nan=True, allow_infinity=True),
    soc_min=_REPORTED, soc_max=_REPORTED,
    requested=st.integers(-10**9, 10**9),
    soc=st.floats(allow_nan=True, allow_infinity=True),
    previous=st.integers(-10**6, 10**6),
    dt=st.floats(0, 3600),
)
def test_whatever_a_device_reports_the_setpoint_stays_inside_ours_and_its_own(
        charge, discharge, soc_min, soc_max, requested, soc, previous, dt):
    env = ENV.within_device(max_charge_w=charge, max_discharge_w=discharge,
                            soc_min_pct=soc_min, soc_max_pct=soc_max)
    w, _ = env.clamp(requested_w=requested, soc_pct=soc, previous_w=previous, dt_s=dt)
    assert ENV.contains(w=w, soc_pct=soc) and env.contains(w=w, soc_pct=soc)
    if w > 0:
        assert w <= charge and (soc_max is None or soc < soc_max)
    if w < 0:
        assert -w <= discharge and (soc_min is None or soc > soc_min)
    if soc_min is not None and soc_max is not None and not soc_min < soc_max:
        assert w == 0 and env.held


def test_a_backup_mode_battery_reporting_a_minimum_of_100_pct_is_held_idle():
    env = ENV.within_device(max_charge_w=3000, max_discharge_w=3000, soc_min_pct=100,
                            soc_max_pct=100)
    assert env.held == ("the device's SoC window [100, 100] % leaves nothing inside ours "
                        "[10, 95] %")
    assert (env.max_charge_w, env.max_discharge_w) == (0, 0)
    for soc in (0.0, 50.0, 100.0):
        assert env.clamp(requested_w=-2000, soc_pct=soc, previous_w=-2000, dt_s=1)[0] == 0
        assert env.clamp(requested_w=2000, soc_pct=soc, previous_w=2000, dt_s=1)[0] == 0


def test_a_device_window_upside_down_is_held_not_widened():
    """Before, [80, 20] came out as [80, 80.1]: charging allowed past the device's own 20 %."""
    env = ENV.within_device(max_charge_w=3000, max_discharge_w=3000, soc_min_pct=80,
                            soc_max_pct=20)
    assert env.held and env.clamp(requested_w=3000, soc_pct=50, previous_w=0, dt_s=10)[0] == 0


def test_held_stays_held_beside_a_converter():
    held = ENV.holding("no window")
    assert held.beside(-500).held == "no window"
    assert held.beside(-500).clamp(requested_w=400, soc_pct=50, previous_w=0, dt_s=1)[0] == 0


def test_an_unknown_state_of_charge_allows_no_setpoint():
    for soc in (float("nan"), -1.0, 100.5, float("inf")):
        assert ENV.clamp(requested_w=1000, soc_pct=soc, previous_w=1000, dt_s=1) == (
            0, ("soc-unknown",))
        assert not ENV.contains(w=1000, soc_pct=soc)


def test_an_infinite_ramp_is_refused_and_a_huge_one_does_not_overflow():
    with pytest.raises(ValueError, match="ramp rate finite"):
        BatteryEnvelope(soc_min_pct=10, soc_max_pct=95, max_charge_w=1, max_discharge_w=1,
                        ramp_w_per_s=float("inf"))
    fast = BatteryEnvelope(soc_min_pct=10, soc_max_pct=95, max_charge_w=5000,
                           max_discharge_w=4000, ramp_w_per_s=1e308)
    assert fast.clamp(requested_w=10**9, soc_pct=50, previous_w=0, dt_s=3600) == (
        5000, ("max-charge",))
