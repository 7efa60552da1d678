"""Never infeasible: a start outside the window, a deadline no power can meet, a stale device,
a base load above the import limit each give a plan with the violation reported, not an error."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ems import BatteryState, Preferences
from gateway.flex_plan import FlexJob
from gateway.plan import BATTERY, DayPlan, GridCaps, Planner, Problem, Vehicle, Violation
from tests.plan.homes import PREFS, problems

PLANNER = Planner(time_limit_s=30.0, curve_time_limit_s=30.0)
QUARTER = 900.0


def _day(problem: Problem) -> DayPlan:
    outcome = PLANNER.plan(problem, max_buy_wh=10_000, max_sell_wh=10_000)
    assert outcome.source == "optimiser", outcome.reason
    assert outcome.day is not None
    return outcome.day


def _home(steps: int = 8, **kw: object) -> Problem:
    fields: dict[str, object] = dict(
        step_s=QUARTER, pv_wh=(0,) * steps, load_wh=(300,) * steps, import_price=(300,) * steps,
        export_price=(80,) * steps, prefs=PREFS)
    fields.update(kw)
    return Problem(**fields)  # type: ignore[arg-type]


def _only(day: DayPlan, kind: str) -> Violation:
    found = [v for v in day.violations if v.kind == kind]
    assert len(found) == 1, day.violations
    return found[0]


def test_battery_below_its_reserve_at_the_start_is_reported_and_refilled() -> None:
    """5 % in a 10 kWh battery with a 20 % reserve: 1,500 Wh short. One step charges at most
    250 Wh (1 kW) x 0.95, so the first step still misses 1,262.5 Wh; the plan buys at full
    power until the reserve is back (step 6), and no further: retail does not pay to store."""
    battery = BatteryState(capacity_wh=10_000, soc_pct=5, max_charge_w=1_000,
                           max_discharge_w=1_000)
    day = _day(_home(battery=battery))
    below = _only(day, "below-reserve")
    assert below.device == BATTERY and below.first_step == 0
    assert below.wh == pytest.approx(1_500 - 250 * 0.95)
    assert below.steps == 6
    assert day.charge_wh[:6] == pytest.approx((250,) * 6)
    assert day.soc_wh[6:] == pytest.approx((2_000, 2_000))
    assert not any(day.discharge_wh)


def test_battery_above_its_top_at_the_start_is_reported_and_drained() -> None:
    battery = BatteryState(capacity_wh=10_000, soc_pct=99, max_charge_w=1_000,
                           max_discharge_w=1_000)
    day = _day(_home(battery=battery))
    above = _only(day, "above-top")
    assert above.first_step == 0
    assert above.wh == pytest.approx(400 - 250 / 0.95)
    assert day.discharge_wh[0] == pytest.approx(250)


def test_deadline_no_power_can_meet_reports_the_energy_missed() -> None:
    """5 kWh owed within an hour at 1 kW: 4 kWh cannot be done, reported at the due step."""
    job = FlexJob(name="heater", need_wh=5_000, max_w=1_000, due_s=3_600)
    day = _day(_home(jobs=(job,)))
    missed = _only(day, "deadline")
    assert (missed.device, missed.first_step) == ("heater", 3)
    assert missed.wh == pytest.approx(4_000)
    assert dict(day.jobs)["heater"][:4] == pytest.approx((250,) * 4)


def test_deadline_already_passed_is_reported_without_a_column() -> None:
    job = FlexJob(name="dishwasher", need_wh=800, max_w=2_000, due_s=0)
    day = _day(_home(jobs=(job,)))
    assert _only(day, "deadline") == Violation("deadline", "dishwasher", 800.0, 1, 0)
    assert not any(dict(day.jobs)["dishwasher"])


def test_car_that_cannot_be_full_by_ready_by_reports_its_shortfall() -> None:
    """40 % of 60 kWh, 80 % wanted in two hours at 11 kW x 0.92: 24 kWh owed, 20.24 possible."""
    car = Vehicle(name="ev", battery=BatteryState(
        capacity_wh=60_000, soc_pct=40, max_charge_w=11_000, max_discharge_w=0,
        charge_efficiency=0.92), target_soc_pct=80, ready_by_s=7_200)
    day = _day(_home(vehicle=car))
    missed = _only(day, "deadline")
    assert missed.device == "ev" and missed.first_step == 7
    assert missed.wh == pytest.approx(24_000 - 22_000 * 0.92)


def test_stale_devices_are_idle_in_the_first_step() -> None:
    battery = BatteryState(capacity_wh=10_000, soc_pct=50, max_charge_w=3_000,
                           max_discharge_w=3_000)
    job = FlexJob(name="heater", need_wh=1_000, max_w=2_000, due_s=900)
    day = _day(_home(battery=battery, jobs=(job,), stale=frozenset({BATTERY, "heater"})))
    assert day.charge_wh[0] == day.discharge_wh[0] == 0
    assert dict(day.jobs)["heater"][0] == 0
    assert _only(day, "deadline") == Violation("deadline", "heater", 1_000.0, 1, 0)
    assert day.discharge_wh[1] > 0  # back from the next step on


def test_base_load_above_the_import_limit_is_reported_and_the_rest_held() -> None:
    """A 1,200 Wh base load under a 1,000 Wh import limit: the battery covers what it can (500
    Wh a step), nothing else draws, and what is still over is reported."""
    battery = BatteryState(capacity_wh=10_000, soc_pct=90, max_charge_w=2_000,
                           max_discharge_w=2_000)
    steps = 4
    caps = GridCaps(import_wh=(1_000,) * steps, export_wh=(None,) * steps,
                    dimmed_wh=(None,) * steps)
    day = _day(_home(steps, load_wh=(1_700,) * steps, battery=battery, grid=caps))
    over = _only(day, "import-limit")
    assert over.wh == pytest.approx(200) and over.steps == steps
    assert day.discharge_wh == pytest.approx((500,) * steps)


def test_zero_export_curtails_surplus_the_home_cannot_use() -> None:
    battery = BatteryState(capacity_wh=5_000, soc_pct=95, max_charge_w=2_000,
                           max_discharge_w=2_000)
    steps = 4
    caps = GridCaps(import_wh=(None,) * steps, export_wh=(0,) * steps,
                    dimmed_wh=(None,) * steps)
    day = _day(_home(steps, pv_wh=(2_000,) * steps, battery=battery, grid=caps))
    assert not day.violations
    for t in range(steps):
        assert day.meter_wh(t) >= -1e-6
        assert day.pv_wh[t] == pytest.approx(300)  # the load; the battery is at its top


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(), soc=st.floats(0, 100), reserve=st.floats(0, 100),
       top=st.floats(0, 100))
def test_any_start_outside_the_window_plans_and_reports(problem: Problem, soc: float,
                                                        reserve: float, top: float) -> None:
    """Whatever the start, the window and the reserve (a reserve above the top included), a
    plan comes back; a first step that ends outside the window reports it."""
    battery = BatteryState(capacity_wh=10_000, soc_pct=soc, max_charge_w=500,
                           max_discharge_w=500)
    prefs = Preferences(min_sell_price=120, max_buy_price=250, reserve_pct=reserve,
                        soc_max_pct=top)
    problem = Problem(**{**{f: getattr(problem, f) for f in Problem.__dataclass_fields__},
                         "battery": battery, "prefs": prefs,
                         "stale": problem.stale - {BATTERY}})
    day = _day(problem)
    kinds = {v.kind for v in day.violations if v.device == BATTERY}
    if day.soc_wh[0] < reserve * 100 - 1e-3:
        assert "below-reserve" in kinds
    if day.soc_wh[0] > top * 100 + 1e-3:
        assert "above-top" in kinds
