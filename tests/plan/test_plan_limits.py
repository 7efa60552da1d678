"""The day plan keeps every hard limit for any home, and reports every soft one it breaks.

Checked on the plan itself, independently of how the programme is built: the energy balance of
every step, the battery's and the car's power, cells and window, the loads' power, need and
deadline, PV under the forecast and the inverter's cap, the grid operator's limits at the
meter, and nothing commanded of a stale device. Floats are the solver's: equal to 1e-6 Wh.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings

from gateway.ems import BatteryState
from gateway.flex_plan import slot_wh
from gateway.plan import BATTERY, DayPlan, Planner, Problem, Violation
from tests.plan.homes import problems

TOL = 1e-6
PLANNER = Planner(time_limit_s=30.0, curve_time_limit_s=30.0)
"""A generous limit: these tests are about the plan, never about the machine's load."""


def _plan(problem: Problem) -> DayPlan:
    outcome = PLANNER.plan(problem, max_buy_wh=20_000, max_sell_wh=20_000)
    assert outcome.source == "optimiser", outcome.reason
    assert outcome.day is not None
    return outcome.day


def _worst(day: DayPlan, kind: str, device: str) -> float:
    found = [v.wh for v in day.violations if v.kind == kind and v.device == device]
    return max(found, default=0.0)


def _balance(problem: Problem, day: DayPlan) -> list[str]:
    out = []
    for t in range(problem.steps):
        supply = (day.pv_wh[t] + day.grid_import_wh[t] - day.grid_export_wh[t]
                  + day.market_wh[t] + day.discharge_wh[t] + day.ev_discharge_wh[t])
        demand = problem.load_wh[t] + day.job_wh(t) + day.charge_wh[t] + day.ev_charge_wh[t]
        if abs(supply - demand) > TOL:
            out.append(f"step {t}: supply {supply} != demand {demand}")
    return out


def _pack(problem: Problem, day: DayPlan, pack: BatteryState, name: str, *,
          charge: tuple[float, ...], discharge: tuple[float, ...], soc: tuple[float, ...],
          floor_pct: float | None, top_pct: float | None, plugged: int, v2g: bool) -> list[str]:
    out = []
    if pack.capacity_wh <= 0:
        return [f"{name}: flows without cells"] if any(charge) or any(discharge) else []
    stored = pack.soc_pct / 100 * pack.capacity_wh
    below = _worst(day, "below-reserve" if name == BATTERY else "below-v2g-floor", name)
    above = _worst(day, "above-top", name)
    for t in range(problem.steps):
        if t >= plugged:
            if charge[t] or discharge[t]:
                out.append(f"{name} step {t}: flows after it left")
            continue
        span = problem.step_s
        c_top = slot_wh(pack.max_charge_w, span)
        d_top = slot_wh(pack.max_discharge_w, span) if v2g else 0
        if t == 0 and name in problem.stale:
            c_top = d_top = 0
        if not -TOL <= charge[t] <= c_top + TOL or not -TOL <= discharge[t] <= d_top + TOL:
            out.append(f"{name} step {t}: charge {charge[t]} / discharge {discharge[t]} "
                       f"beyond {c_top} / {d_top}")
        if c_top and d_top and charge[t] / c_top + discharge[t] / d_top > 1 + TOL:
            out.append(f"{name} step {t}: charges and discharges beyond the converter")
        stored += pack.charge_efficiency * charge[t] - discharge[t] / pack.discharge_efficiency
        if abs(stored - soc[t]) > 1e-5 * max(1.0, pack.capacity_wh):
            out.append(f"{name} step {t}: cells {soc[t]}, the flows give {stored}")
        if not -TOL <= soc[t] <= pack.capacity_wh + TOL:
            out.append(f"{name} step {t}: cells {soc[t]} outside 0..{pack.capacity_wh}")
        if floor_pct is not None and soc[t] < floor_pct / 100 * pack.capacity_wh - below - TOL:
            out.append(f"{name} step {t}: below its floor by more than the reported {below}")
        if top_pct is not None and soc[t] > top_pct / 100 * pack.capacity_wh + above + TOL:
            out.append(f"{name} step {t}: above its top by more than the reported {above}")
    return out


def _storage(problem: Problem, day: DayPlan) -> list[str]:
    out = []
    if problem.battery is None or problem.battery.capacity_wh <= 0:
        if any(day.charge_wh) or any(day.discharge_wh):
            out.append("battery flows without a battery")
    else:
        out += _pack(problem, day, problem.battery, BATTERY, charge=day.charge_wh,
                     discharge=day.discharge_wh, soc=day.soc_wh,
                     floor_pct=problem.prefs.reserve_pct, top_pct=problem.prefs.soc_max_pct,
                     plugged=problem.steps, v2g=True)
    vehicle = problem.vehicle
    if vehicle is None or vehicle.battery.capacity_wh <= 0:
        if any(day.ev_charge_wh) or any(day.ev_discharge_wh):
            out.append("EV flows without an EV")
        return out
    departs = vehicle.departs_s
    plugged = problem.steps if departs is None else min(problem.steps,
                                                        math.ceil(departs / problem.step_s))
    if departs is not None and plugged and departs < plugged * problem.step_s:
        last = plugged - 1  # leaves within its last step: only what fits before it leaves
        span = departs - last * problem.step_s
        if day.ev_charge_wh[last] > slot_wh(vehicle.battery.max_charge_w, span) + TOL:
            out.append(f"ev charges {day.ev_charge_wh[last]} Wh in the step it leaves")
    out += _pack(problem, day, vehicle.battery, "ev", charge=day.ev_charge_wh,
                 discharge=day.ev_discharge_wh, soc=day.ev_soc_wh,
                 floor_pct=vehicle.v2g_min_soc_pct if vehicle.v2g else None, top_pct=None,
                 plugged=plugged, v2g=vehicle.v2g)
    return out


def _loads(problem: Problem, day: DayPlan) -> list[str]:
    out = []
    runs = dict(day.jobs)
    for job in problem.jobs:
        run = runs[job.name]
        for t in range(problem.steps):
            start = t * problem.step_s
            top = slot_wh(job.max_w, max(0.0, min(problem.step_s, job.due_s - start)))
            if t == 0 and job.name in problem.stale:
                top = 0
            if not -TOL <= run[t] <= top + TOL:
                out.append(f"{job.name} step {t}: runs {run[t]}, at most {top}")
        if sum(run) > job.need_wh + TOL:
            out.append(f"{job.name}: runs {sum(run)} Wh, owes {job.need_wh}")
        after = slot_wh(job.max_w, max(0.0, job.due_s - problem.horizon_s))
        missed = max(0, job.need_wh - after) - sum(run)
        if missed > TOL and _worst(day, "deadline", job.name) < missed - TOL:
            out.append(f"{job.name}: misses {missed} Wh, reported {day.violations}")
    return out


def _grid(problem: Problem, day: DayPlan) -> list[str]:
    out = []
    over = _worst(day, "import-limit", "grid")
    for t in range(problem.steps):
        top = problem.pv_wh[t]
        if problem.pv_max_w is not None:
            top = min(top, slot_wh(problem.pv_max_w, problem.step_s))
        if not -TOL <= day.pv_wh[t] <= top + TOL:
            out.append(f"step {t}: PV {day.pv_wh[t]} outside 0..{top}")
        if min(day.grid_import_wh[t], day.grid_export_wh[t]) < -TOL:
            out.append(f"step {t}: negative grid flow")
        if problem.grid is None:
            continue
        meter = day.meter_wh(t)
        export = problem.grid.export_wh[t]
        if export is not None and meter < -export - TOL:
            out.append(f"step {t}: exports {-meter} Wh, limit {export}")
        imported = problem.grid.import_wh[t]
        dimmed = problem.grid.dimmed_wh[t]
        caps = [c for c in (imported, None if dimmed is None else dimmed + problem.load_wh[t])
                if c is not None]
        if caps and meter > min(caps) + over + TOL:
            out.append(f"step {t}: imports {meter} Wh, limit {min(caps)} (+{over} reported)")
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_plan_keeps_every_hard_limit_and_reports_every_soft_one(problem: Problem) -> None:
    day = _plan(problem)
    breaches = (_balance(problem, day) + _storage(problem, day) + _loads(problem, day)
                + _grid(problem, day))
    assert not breaches, "\n".join(breaches[:10])
    assert all(isinstance(v, Violation) and v.wh > 0 for v in day.violations)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(prices=(0, 600)))
def test_interval_plan_is_whole_wh_and_balances_exactly(problem: Problem) -> None:
    """The first step as ``ems.Plan``: ``pv − load − flex = battery + residual`` in integers,
    the battery within its power, and a bid only on the side of the residual."""
    outcome = PLANNER.plan(problem, max_buy_wh=20_000, max_sell_wh=20_000)
    plan = outcome.interval
    assert plan.pv_wh - plan.load_wh - plan.flex_wh == plan.battery_wh + plan.residual_wh
    assert all(type(v) is int for v in (plan.battery_wh, plan.residual_wh, plan.energy_wh,
                                        plan.limit_price, plan.pv_wh))
    battery = problem.battery
    if battery is not None and BATTERY not in problem.stale:
        assert -slot_wh(battery.max_discharge_w, problem.step_s) <= plan.battery_wh
        assert plan.battery_wh <= slot_wh(battery.max_charge_w, problem.step_s)
    if plan.side == "sell":
        assert 0 < plan.energy_wh <= plan.residual_wh
    elif plan.side == "buy":
        assert 0 < plan.energy_wh <= -plan.residual_wh
