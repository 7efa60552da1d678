"""V2G: the car feeds the home only with the owner's consent, never below the owner's floor,
and is still charged to its target by ready-by."""

from __future__ import annotations

import pytest

from gateway.ems import BatteryState
from gateway.plan import DayPlan, Planner, Problem, Vehicle
from tests.plan.homes import PREFS

STEPS = 12
PACK = BatteryState(capacity_wh=40_000, soc_pct=60, max_charge_w=7_400,
                    max_discharge_w=7_400, charge_efficiency=0.9, discharge_efficiency=0.9)


def _day(v2g_min_soc_pct: float | None, pack: BatteryState = PACK) -> DayPlan:
    """An evening peak (4 steps at 600 µ/Wh, 1,500 Wh of load each) and a cheap night (100)
    before ready-by at the end; the car wants 70 %."""
    car = Vehicle(name="ev", battery=pack, target_soc_pct=70, ready_by_s=STEPS * 900,
                  v2g_min_soc_pct=v2g_min_soc_pct)
    problem = Problem(step_s=900.0, pv_wh=(0,) * STEPS, load_wh=(1_500,) * 4 + (200,) * 8,
                      import_price=(600,) * 4 + (100,) * 8, export_price=(50,) * STEPS,
                      prefs=PREFS, vehicle=car)
    day = Planner().plan(problem, max_buy_wh=0, max_sell_wh=0).day
    assert day is not None
    return day


def test_with_consent_the_car_covers_the_peak_and_is_full_by_ready_by() -> None:
    """6,000 Wh delivered is 6,667 Wh of cells, well above the 30 % floor; the night (8 steps
    of 1,850 Wh at 100) refills it and the 4,000 Wh the target adds."""
    day = _day(v2g_min_soc_pct=30)
    assert day.ev_discharge_wh[:4] == pytest.approx((1_500,) * 4)
    assert day.grid_export_wh == pytest.approx((0,) * STEPS)  # never sold at feed-in
    assert min(day.ev_soc_wh) == pytest.approx(24_000 - 6_000 / 0.9)
    assert day.ev_soc_wh[-1] == pytest.approx(28_000)
    assert not day.violations


def test_the_floor_stops_the_car_before_the_peak_is_covered() -> None:
    """From 60 % with a 55 % floor only 2,000 Wh of cells may go: 1,800 Wh delivered."""
    day = _day(v2g_min_soc_pct=55)
    assert sum(day.ev_discharge_wh) == pytest.approx(2_000 * 0.9)
    assert min(day.ev_soc_wh) == pytest.approx(22_000)


def test_without_consent_or_a_bidirectional_charger_the_car_only_charges() -> None:
    for day in (_day(v2g_min_soc_pct=None),
                _day(v2g_min_soc_pct=50, pack=BatteryState(
                    capacity_wh=40_000, soc_pct=40, max_charge_w=7_400, max_discharge_w=0))):
        assert not any(day.ev_discharge_wh)
        assert not day.violations  # below a floor it cannot drain anyway: nothing to report
