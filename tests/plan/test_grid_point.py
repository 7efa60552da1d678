"""The export limit held at the meter: the battery is never steered past it, and PV the battery
cannot take is curtailed by what would pass it."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway.dispatch import IntervalTarget, decide
from gateway.envelope import BatteryEnvelope
from gateway.home.battery import charge_outlook, lasting_w
from gateway.home.grid_point import (
    MARGIN_W,
    RAISE_SHARE,
    checked_cap_w,
    held_by_cap,
    margin_w,
    meter_floor_w,
    offered_cap_w,
)

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
       rated=st.integers(1, 15_000), offered=st.none() | st.integers(0, 15_000),
       rise=st.integers(0, 5_000))
def test_the_checked_cap_keeps_the_meter_inside_the_limit_whenever_pv_can(
        limit: int, meter: int, change: int, producing: int, rated: int, offered: int | None,
        rise: int) -> None:
    """With the PV risen by what the offered cap let through and the inverter at the checked
    cap (it produces at most that), the meter exports no more than the limit less the margin,
    unless curtailing all PV could not get it there; the check never raises the offer. Of the
    battery's charging more, only the rise it was handed is counted on: full cells refuse the
    charge they are commanded."""
    producing = min(producing, rated)
    new = checked_cap_w(export_limit_w=limit, meter_w=meter, pv_w=-producing,
                        offered_w=offered, rise_w=rise, battery_change_w=change, rated_w=rated)
    predicted = meter - rise + (min(change, rise) if change > 0 else change)
    if predicted >= meter_floor_w(limit):
        assert new == offered
        return
    assert new is not None and 0 <= new < rated
    after = predicted + max(0, producing + rise - new)  # PV above the cap is not produced
    assert after >= meter_floor_w(limit) or new == 0


@given(limit=st.integers(0, 20_000), meter=st.integers(-20_000, 20_000),
       producing=st.integers(0, 15_000), rated=st.integers(1, 15_000),
       cap=st.none() | st.integers(0, 15_000), room=st.integers(0, 5_000))
def test_an_offered_cap_rises_by_a_tenth_of_the_rating_at_most_and_says_by_how_much(
        limit: int, meter: int, producing: int, rated: int, cap: int | None, room: int) -> None:
    """The offer never lowers a cap, never raises one while the meter is past the floor, and
    the rise handed to the battery is what the inverter held at its cap may add under it."""
    producing = min(producing, rated, cap if cap is not None else rated)
    offered, rise = offered_cap_w(export_limit_w=limit, meter_w=meter, pv_w=-producing,
                                  cap_w=cap, rated_w=rated, battery_room_w=room)
    if cap is None:
        assert (offered, rise) == (None, 0)
        return
    step = math.ceil(rated * RAISE_SHARE)
    if offered is None:  # lifted once it reaches the rating
        assert cap + (0 if meter < meter_floor_w(limit) else step) >= rated
    else:
        assert cap <= offered <= cap + step
        assert offered == cap or meter >= meter_floor_w(limit)
    top = rated if offered is None else offered
    assert 0 <= rise <= max(0, top - producing)
    assert rise == 0 or producing + MARGIN_W >= cap


def test_a_raised_cap_is_taken_by_the_battery_in_the_same_period() -> None:
    """Zero export, the meter at its floor, the PV held at 2.95 kW with the battery charging
    1 kW of its 3: the cap is offered 600 W higher, the battery's setpoint is chosen for the
    meter once those 600 W flow (it charges 1.6 kW), the check keeps the offer, and the meter
    stays at its floor. Before, the cap rose after the setpoint was written, and the 600 W
    went to the grid for a control period."""
    offered, rise = offered_cap_w(export_limit_w=0, meter_w=50, pv_w=-2_950, cap_w=2_950,
                                  rated_w=6_000, battery_room_w=2_000)
    assert (offered, rise) == (3_550, 600)
    decision = decide(target=None, elapsed_s=0, metered_wh=0, meter_w=50 - rise,
                      battery_w=1_000, soc_pct=50, previous_w=1_000, dt_s=120,
                      envelope=ENVELOPE, meter_floor_w=meter_floor_w(0))
    assert decision.setpoint_w == 1_600
    change = decision.setpoint_w - 1_000
    assert checked_cap_w(export_limit_w=0, meter_w=50, pv_w=-2_950, offered_w=offered,
                         rise_w=rise, battery_change_w=change, rated_w=6_000) == 3_550
    assert 50 - rise + change == meter_floor_w(0)


def test_a_cap_comes_back_up_by_the_room_below_the_limit_then_is_lifted() -> None:
    """Down by the whole excess at once; up by the room at the meter and in the battery, a
    tenth of the rating a period at most, lifted once it reaches the rating."""
    assert checked_cap_w(export_limit_w=0, meter_w=-1_000, pv_w=-4_000, offered_w=None,
                         rise_w=0, battery_change_w=0, rated_w=8_000) == 4_000 - 1_050
    assert offered_cap_w(export_limit_w=0, meter_w=250, pv_w=-2_950, cap_w=2_950,
                         rated_w=8_000, battery_room_w=0) == (3_150, 200)
    assert offered_cap_w(export_limit_w=0, meter_w=50, pv_w=-2_950, cap_w=2_950,
                         rated_w=8_000, battery_room_w=500) == (3_450, 500)
    assert offered_cap_w(export_limit_w=0, meter_w=50, pv_w=-2_000, cap_w=2_950,
                         rated_w=8_000, battery_room_w=500) == (3_450, 0)  # the sun holds it
    cap: int | None = 2_950
    periods = 0
    while cap is not None:
        cap, _ = offered_cap_w(export_limit_w=0, meter_w=6_000, pv_w=-2_950, cap_w=cap,
                               rated_w=8_000, battery_room_w=0)
        periods += 1
    assert periods == 7  # 2,950 + 6 x 800 = 7,750, then past 8,000


def test_a_full_battery_commanded_to_charge_does_not_hold_the_cap_up() -> None:
    """The meter exports 4.4 kW with the battery commanded to 3 kW but full (charging 0): the
    cap comes down by the whole excess, not by what the battery was told to take."""
    assert checked_cap_w(export_limit_w=1_500, meter_w=-4_425, pv_w=-4_600, offered_w=4_600,
                         rise_w=0, battery_change_w=3_000, rated_w=9_000) == 4_600 - 3_000


def test_a_battery_about_to_fill_is_counted_on_for_what_it_can_still_take() -> None:
    """30 Wh of room below the top (94.2 % of 10 kWh, top 95 % less the half-percent margin):
    over a 2-minute period a 3 kW setpoint lasts as 900 W, and nothing is left to raise a cap
    on only once it is full."""
    def outlook(soc_pct: float, held: bool = False) -> tuple[int, int]:
        return charge_outlook(soc_pct=soc_pct, top_pct=95.0, capacity_wh=10_000,
                              written_w=3_000, battery_w=1_000, max_charge_w=5_000, held=held,
                              period_ms=120_000)

    assert outlook(94.2) == (900 - 1_000, 2_000)
    assert outlook(50.0) == (2_000, 2_000)
    assert outlook(94.6) == (-1_000, 0)
    assert outlook(float("nan")) == (-1_000, 0)  # SoC not reported
    assert outlook(50.0, held=True) == (-1_000, 0)


def test_under_an_export_limit_a_charge_the_cells_cannot_hold_is_spread_over_the_period() -> None:
    """30 Wh below the top over a 2-minute period: 3 kW would fill the cells in 36 s and the
    rest of the period's PV would go to the grid; 900 W lasts the period."""
    def spread(soc_pct: float, written_w: int) -> int:
        return lasting_w(soc_pct=soc_pct, top_pct=95.0, capacity_wh=10_000, written_w=written_w,
                         held=False, period_ms=120_000)

    assert spread(94.2, 3_000) == 900
    assert spread(50.0, 3_000) == 3_000
    assert spread(94.6, 3_000) == 0
    assert spread(94.6, -2_000) == -2_000


def test_an_inverter_is_held_by_the_cap_only_when_it_produces_what_the_cap_allows() -> None:
    """Only then is its output the cap's, not the sun's (the forecast does not learn it)."""
    assert held_by_cap(pv_w=-2_000, cap_w=2_000)
    assert held_by_cap(pv_w=-1_960, cap_w=2_000)  # within the margin: readings lag a poll
    assert not held_by_cap(pv_w=-1_500, cap_w=2_000)  # a cloud holds it, not the cap
    assert not held_by_cap(pv_w=-2_000, cap_w=None)

