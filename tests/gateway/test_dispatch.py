"""The dispatcher steers the meter to the agreed energy, falls back to self-consumption, and never
leaves the envelope."""

from hypothesis import given
from hypothesis import strategies as st

from gateway.dispatch import IntervalTarget, decide
from gateway.envelope import BatteryEnvelope

ENV = BatteryEnvelope(
    soc_min_pct=10, soc_max_pct=95, max_charge_w=5000, max_discharge_w=5000, ramp_w_per_s=10_000
)


@given(
    target=st.none() | st.builds(IntervalTarget, meter_wh=st.integers(-5000, 5000),
                                 length_s=st.sampled_from([60.0, 900.0])),
    elapsed=st.floats(0, 1000),
    metered=st.floats(-5000, 5000),
    meter_w=st.integers(-20_000, 20_000),
    battery_w=st.integers(-5000, 5000),
    soc=st.floats(0, 100),
    previous=st.integers(-5000, 5000),
)
def test_every_decision_is_inside_the_envelope(
    target, elapsed, metered, meter_w, battery_w, soc, previous
):
    d = decide(target=target, elapsed_s=elapsed, metered_wh=metered, meter_w=meter_w,
               battery_w=battery_w, soc_pct=soc, previous_w=previous, dt_s=1.0, envelope=ENV)
    assert ENV.contains(w=d.setpoint_w, soc_pct=soc)
    assert d.mode == ("safe" if target is None else "market")


def test_safe_mode_is_self_consumption():
    # home uses 1200 W net of PV, battery idle, meter imports 1200 W: discharge 1200 W
    d = decide(target=None, elapsed_s=0, metered_wh=0, meter_w=1200, battery_w=0, soc_pct=50,
               previous_w=0, dt_s=1, envelope=ENV, safe_reason="meter stale")
    assert (d.mode, d.setpoint_w, d.reason) == ("safe", -1200, "meter stale")


def test_market_mode_makes_the_meter_export_what_was_sold():
    # sold 500 Wh over 900 s = 2000 W export; PV surplus is 3000 W and the battery charges 0 W now
    target = IntervalTarget(meter_wh=-500, length_s=900)
    d = decide(target=target, elapsed_s=0, metered_wh=0, meter_w=-3000, battery_w=0, soc_pct=50,
               previous_w=0, dt_s=1, envelope=ENV)
    assert d.setpoint_w == 1000  # store the other 1000 W, export 2000 W


def test_market_mode_catches_up_a_shortfall():
    target = IntervalTarget(meter_wh=-500, length_s=900)
    on_track = decide(target=target, elapsed_s=450, metered_wh=-250, meter_w=-2000, battery_w=1000,
                      soc_pct=50, previous_w=1000, dt_s=1, envelope=ENV)
    behind = decide(target=target, elapsed_s=450, metered_wh=-150, meter_w=-2000, battery_w=1000,
                    soc_pct=50, previous_w=1000, dt_s=1, envelope=ENV)
    assert on_track.setpoint_w == 1000
    assert behind.setpoint_w < on_track.setpoint_w  # charge less, export more to catch up
