"""The export limit held at the meter: the battery is never steered past it, and PV the battery
cannot take is curtailed by what would pass it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.dispatch import IntervalTarget, decide
from gateway.envelope import BatteryEnvelope
from gateway.home.battery import charge_outlook
from gateway.home.grid_point import margin_w, pv_cap_w

ENVELOPE = BatteryEnvelope(soc_min_pct=10, soc_max_pct=95, max_charge_w=5_000,
                           max_discharge_w=5_000, ramp_w_per_s=1e6)


def test_a_cleared_sale_beyond_the_export_limit_is_not_steered_through_the_meter() -> None:
    """4 kWh sold in an hour under a 3 kW limit: the battery discharges to the floor only."""
    decision = decide(target=IntervalTarget(meter_wh=-4_000, length_s=3600), elapsed_s=0,
                      metered_wh=0, meter_w=0, battery_w=0, soc_pct=50, previous_w=0, dt_s=1,
                      envelope=ENVELOPE, meter_floor_w=-(3_000 - margin_w(3_000)))
    assert decision.setpoint_w == -(3_000 - margin_w(3_000))


def test_safe_mode_under_zero_export_charges_the_surplus_and_imports_a_little() -> None:
    """2 kW of surplus at the meter, zero export: the battery takes it all and the margin."""
    decision = decide(target=None, elapsed_s=0, metered_wh=0, meter_w=-2_000, battery_w=0,
                      soc_pct=50, previous_w=0, dt_s=1, envelope=ENVELOPE,
                      meter_floor_w=margin_w(0))
    assert decision.setpoint_w == 2_000 + margin_w(0)


def test_an_import_limit_caps_what_a_cleared_purchase_charges() -> None:
    decision = decide(target=IntervalTarget(meter_wh=5_000, length_s=3600), elapsed_s=0,
                      metered_wh=0, meter_w=500, battery_w=0, soc_pct=50, previous_w=0, dt_s=1,
                      envelope=ENVELOPE, meter_ceiling_w=3_000)
    assert decision.setpoint_w == 2_500


@given(limit=st.integers(0, 20_000), meter=st.integers(-20_000, 20_000),
       change=st.integers(-5_000, 5_000), producing=st.integers(0, 15_000),
       rated=st.integers(1, 15_000), cap=st.none() | st.integers(0, 15_000))
def test_the_cap_keeps_the_meter_inside_the_limit_whenever_pv_can(
        limit: int, meter: int, change: int, producing: int, rated: int, cap: int | None) -> None:
    """With the inverter at the new cap (it produces at most that), the meter exports no more
    than the limit less the margin, unless curtailing all PV could not get it there; a cap is
    lifted only with room below the limit for the inverter's whole rating. Only the battery's
    discharging more is counted on: full cells refuse the charge they are commanded."""
    producing = min(producing, rated)
    new = pv_cap_w(export_limit_w=limit, meter_w=meter, battery_change_w=change,
                   pv_w=-producing, cap_w=cap, rated_w=rated)
    floor = -(limit - margin_w(limit))
    predicted = meter + min(0, change)  # more charging is not counted on
    if new is None:
        assert predicted >= floor
        assert cap is None or predicted - floor + cap >= rated
        return
    assert 0 <= new < rated
    after = predicted + max(0, producing - new)  # PV above the cap is not produced
    assert after >= floor or new == 0


def test_a_cap_comes_back_up_by_the_room_below_the_limit_then_is_lifted() -> None:
    """Down by the whole excess at once; up by the room at the meter and in the battery, a
    tenth of the rating a period at most, lifted once it reaches the rating."""
    assert pv_cap_w(export_limit_w=0, meter_w=-1_000, battery_change_w=0, pv_w=-4_000,
                    cap_w=None, rated_w=8_000) == 4_000 - 1_050
    assert pv_cap_w(export_limit_w=0, meter_w=250, battery_change_w=0, pv_w=-2_950,
                    cap_w=2_950, rated_w=8_000) == 3_150
    assert pv_cap_w(export_limit_w=0, meter_w=50, battery_change_w=0, pv_w=-2_950,
                    cap_w=2_950, rated_w=8_000, battery_room_w=500) == 3_450
    cap: int | None = 2_950
    periods = 0
    while cap is not None:
        cap = pv_cap_w(export_limit_w=0, meter_w=6_000, battery_change_w=0, pv_w=-2_950,
                       cap_w=cap, rated_w=8_000)
        periods += 1
    assert periods == 7  # 2,950 + 6 x 800 = 7,750, then past 8,000


def test_a_full_battery_commanded_to_charge_does_not_hold_the_cap_up() -> None:
    """The meter exports 4.4 kW with the battery commanded to 3 kW but full (charging 0): the
    cap comes down by the whole excess, not by what the battery was told to take."""
    assert pv_cap_w(export_limit_w=1_500, meter_w=-4_425, battery_change_w=3_000, pv_w=-4_600,
                    cap_w=4_600, rated_w=9_000) == 4_600 - 3_000


def test_a_battery_about_to_fill_is_counted_on_for_what_it_can_still_take() -> None:
    """30 Wh of room below the top (94.2 % of 10 kWh, top 95 % less the half-percent margin):
    over a 2-minute period a 3 kW setpoint lasts as 900 W, and nothing is left to raise a cap
    on only once it is full."""
    outlook = {"top_pct": 95.0, "capacity_wh": 10_000, "written_w": 3_000, "battery_w": 1_000,
               "max_charge_w": 5_000, "held": False, "period_ms": 120_000}
    assert charge_outlook(soc_pct=94.2, **outlook) == (900 - 1_000, 2_000)
    assert charge_outlook(soc_pct=50.0, **outlook) == (2_000, 2_000)
    assert charge_outlook(soc_pct=94.6, **outlook) == (-1_000, 0)
    assert charge_outlook(soc_pct=float("nan"), **outlook) == (-1_000, 0)  # SoC not reported
    assert charge_outlook(soc_pct=50.0, **{**outlook, "held": True}) == (-1_000, 0)
