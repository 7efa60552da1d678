"""A DC-bus home never offers more than its converter and battery can move in an interval: its
trades cross the bus through the converter, and a position past that would be carried by the
bus master alone until the bus left its window (a home clearing 4 kW with a 3 kW battery left
the master 1.5 kWh short over a day)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.ems import BatteryState, Plan
from gateway.home.trader import over_the_bus
from tests.plan.homes import offers

INTERVAL_MS = 900_000


def battery(charge_w: int, discharge_w: int) -> BatteryState:
    return BatteryState(capacity_wh=10_000, soc_pct=50, max_charge_w=charge_w,
                        max_discharge_w=discharge_w)


@given(plan=offers(), cap_w=st.integers(0, 10_000), charge_w=st.integers(0, 10_000),
       discharge_w=st.integers(0, 10_000))
def test_an_offer_over_the_bus_is_what_the_converter_and_battery_move_its_best_steps_kept(
        plan: Plan, cap_w: int, charge_w: int, discharge_w: int) -> None:
    capped = over_the_bus(plan, battery=battery(charge_w, discharge_w), cap_w=cap_w,
                          length_ms=INTERVAL_MS)
    battery_w = discharge_w if plan.side == "sell" else charge_w
    most_wh = min(cap_w, battery_w) * INTERVAL_MS // 3_600_000
    assert capped.energy_wh == min(plan.energy_wh, most_wh)
    if capped.energy_wh == 0:
        assert capped.side is None and capped.curve() == ()
        return
    assert capped.side == plan.side
    curve = capped.curve()
    assert sum(step.wh for step in curve) == capped.energy_wh
    # the best steps stay, at their prices, in order; only the last kept one may be shorter
    assert [s.price for s in curve] == [s.price for s in plan.curve()][:len(curve)]
    assert all(a == b for a, b in zip(curve[:-1], plan.curve(), strict=False))


def test_a_home_on_ac_and_a_dc_home_within_its_converter_are_not_cut() -> None:
    plan = Plan(pv_wh=0, load_wh=0, battery_wh=0, residual_wh=0, side="sell", energy_wh=700,
                limit_price=150)
    assert over_the_bus(plan, battery=None, cap_w=None, length_ms=INTERVAL_MS) == plan
    assert over_the_bus(plan, battery=battery(3_000, 3_000), cap_w=7_000,
                        length_ms=INTERVAL_MS) == plan
    # no battery behind the converter: nothing can cross the bus
    assert over_the_bus(plan, battery=None, cap_w=7_000, length_ms=INTERVAL_MS).side is None
