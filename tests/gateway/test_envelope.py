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
