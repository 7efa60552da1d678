"""The home's day as a linear programme: ``build`` turns a ``Problem`` into the ``Model`` HiGHS
solves.

Per step the energy balance at the home's bus holds exactly: PV used + grid import − grid export
+ market position + battery and EV discharge = base load + deferrable loads + battery and EV
charge.

Limits come in two kinds. *Physics* (power, the cells' capacity, what the sun gives) and the
*grid operator's export limit* are hard bounds: there is always a way to keep them, since PV may
be curtailed and nothing is forced to discharge. *The owner's wishes* (the battery's reserve and
top, the EV's ready-by energy and V2G floor, a load's deadline) and the *import limit* are soft:
a start outside the window or a deadline no power can meet would make a hard programme
infeasible, so each has a slack variable priced far above any price the plan could gain by using
it, and the plan reports every slack it needed (``gateway/plan/result.py``). The import limit's
slack is priced a hundred times higher than the owner's: the base load it may have to cover is
never shed, everything else is given up first. A §14a dimming window caps what the home draws
*beyond its base load*, which is what the rule allows the operator to cap, so it never needs
slack.

Charging and discharging in the same step would waste energy in the round trip. With prices at
or above zero and a wear price on discharge, wasting is never cheaper than curtailing PV, so the
programme is linear: a per-step row ``charge/max_charge + discharge/max_discharge <= 1`` keeps
even a mixed step within what the converter can do by alternating. A step that pays the home to
take energy (a negative import or market price) makes wasting pay: with full cells the
programme would charge and discharge at once to be paid for the losses (and so it would to
dump energy in them when the cells start above the owner's top with nowhere for it to go). The
textbook answer is a binary per battery and step (charge or discharge), a MILP, which HiGHS's
branch and cut solves many times slower than the LP (``python -m bench.bench_ems`` measures
both). The planner branches itself instead (``gateway/plan/planner.py``): only on the steps
where the solution wastes, each branch a warm re-solve of the LP with the charge or the
discharge held at zero, pruned by the LP's bound. It is the same exact search
(``tests/plan/test_plan_solver.py`` checks it against every charge/discharge choice), and the
first dive, discharge held, is nearly always the optimum: in a step that pays for every Wh
taken, energy a battery gives replaces energy the home would be paid to take.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gateway.ems import BatteryState
from gateway.flex_plan import FlexJob, slot_wh
from gateway.plan.model import Builder, Columns, IntArray, Model
from gateway.plan.problem import BATTERY, Problem, Vehicle

_TIE = 1e-3
"""µ/Wh: PV used rather than curtailed when both cost the same (an export price of zero)."""


def penalties(problem: Problem) -> tuple[float, float]:
    """(owner, grid) µ per Wh of slack: above what a Wh could gain anywhere in the day, twice
    over for the round trip, so the plan only uses slack it cannot avoid."""
    prices = [abs(p) for p in (*problem.import_price, *problem.export_price)]
    if problem.market is not None:
        prices += [abs(p) for p in problem.market.price]
    top = max(prices) + problem.wear_price + abs(problem.end_value or 0) + 1
    return 10 * top, 1000 * top


def build(problem: Problem) -> Model:
    """The linear programme for ``problem``."""
    b = Builder()
    steps = problem.steps
    owner_pen, grid_pen = penalties(problem)
    balance = b.rows(steps, lower=np.asarray(problem.load_wh, dtype=np.float64),
                     upper=np.asarray(problem.load_wh, dtype=np.float64))

    pv_top = np.asarray(problem.pv_wh, dtype=np.float64)
    if problem.pv_max_w is not None:
        pv_top = np.minimum(pv_top, slot_wh(problem.pv_max_w, problem.step_s))
    pv = b.cols(steps, upper=pv_top, cost=-_TIE)
    b.coef(balance, pv, 1.0)
    grid_import = b.cols(steps, cost=np.asarray(problem.import_price, dtype=np.float64))
    grid_export = b.cols(steps, cost=-np.asarray(problem.export_price, dtype=np.float64))
    b.coef(balance, grid_import, 1.0)
    b.coef(balance, grid_export, -1.0)
    if problem.market is not None:
        m = problem.market
        market = b.cols(steps, lower=-np.asarray(m.sell_wh, dtype=np.float64),
                        upper=np.asarray(m.buy_wh, dtype=np.float64),
                        cost=np.asarray(m.price, dtype=np.float64))
    else:  # held at zero, but there: the bid curve moves the first step's position
        market = b.cols(steps, upper=0.0)
    b.coef(balance, market, 1.0)
    over_import = _meter_limits(b, problem, grid_import, grid_export, market, grid_pen)

    end_value = _end_value(problem)
    store = _Store.absent(steps)
    if problem.battery is not None and problem.battery.capacity_wh > 0:
        store = _storage(b, problem, problem.battery, balance=balance, name=BATTERY,
                         plugged_s=None, floor_pct=problem.prefs.reserve_pct,
                         top_pct=problem.prefs.soc_max_pct, discharge=True,
                         end_value=end_value, end_value_above=problem.end_value_above,
                         owner_pen=owner_pen)
    ev = _Store.absent(steps)
    shortfall: dict[str, int] = {}
    fixed: dict[str, float] = {}
    vehicle = problem.vehicle
    if vehicle is not None and vehicle.battery.capacity_wh > 0:
        ev = _storage(b, problem, vehicle.battery, balance=balance, name=vehicle.name,
                      plugged_s=vehicle.departs_s,
                      floor_pct=vehicle.v2g_min_soc_pct if vehicle.v2g else None,
                      top_pct=None, discharge=vehicle.v2g, end_value=end_value,
                      owner_pen=owner_pen)
        _ready_by(b, problem, vehicle, ev, owner_pen, shortfall, fixed)
    jobs: dict[str, IntArray] = {}
    for job in problem.jobs:
        jobs[job.name] = _job(b, problem, job, balance, owner_pen, shortfall, fixed)

    starts, index, value = b.csr()
    columns = Columns(
        pv=pv, grid_import=grid_import, grid_export=grid_export, market=market,
        charge=store.charge, discharge=store.discharge, soc=store.soc,
        below_reserve=store.below, above_top=store.above, ev_charge=ev.charge,
        ev_discharge=ev.discharge, ev_soc=ev.soc, ev_below_floor=ev.below,
        over_import=over_import, jobs=jobs, shortfall=shortfall)
    return Model(
        cost=np.concatenate(b.cost), lower=np.concatenate(b.lower),
        upper=np.concatenate(b.upper), row_lower=np.concatenate(b.row_lower),
        row_upper=np.concatenate(b.row_upper), starts=starts, index=index, value=value,
        balance_rows=balance, columns=columns, fixed_shortfall=fixed)


def _end_value(problem: Problem) -> float:
    if problem.end_value is not None:
        return problem.end_value
    eta = problem.battery.discharge_efficiency if problem.battery is not None else 1.0
    return max(0.0, float(np.mean(problem.export_price))) * eta


def _meter_limits(b: Builder, problem: Problem, grid_import: IntArray, grid_export: IntArray,
                  market: IntArray, grid_pen: float) -> IntArray:
    """``-export <= grid import − grid export + market <= import`` on every step with a limit;
    the import side may be exceeded only through a slack column (reported)."""
    steps = problem.steps
    absent = np.full(steps, -1, dtype=np.int64)
    if problem.grid is None:
        return absent
    caps = problem.grid
    top = np.full(steps, np.inf)
    bottom = np.full(steps, -np.inf)
    for t in range(steps):
        limit, dimmed, export = caps.import_wh[t], caps.dimmed_wh[t], caps.export_wh[t]
        if limit is not None:
            top[t] = limit
        if dimmed is not None:
            top[t] = min(top[t], dimmed + problem.load_wh[t])
        if export is not None:
            bottom[t] = -export
    limited = np.flatnonzero(np.isfinite(top) | np.isfinite(bottom))
    if len(limited) == 0:
        return absent
    rows = b.rows(len(limited), lower=bottom[limited], upper=top[limited])
    b.coef(rows, grid_import[limited], 1.0)
    b.coef(rows, grid_export[limited], -1.0)
    b.coef(rows, market[limited], 1.0)
    over = absent.copy()
    capped = np.flatnonzero(np.isfinite(top[limited]))
    over[limited[capped]] = b.cols(len(capped), cost=grid_pen)
    b.coef(rows[capped], over[limited[capped]], -1.0)
    return over


class _Store(NamedTuple):
    """The columns of one battery per step (-1: absent, e.g. after the car has left)."""

    charge: IntArray
    discharge: IntArray
    soc: IntArray
    below: IntArray
    above: IntArray

    @classmethod
    def absent(cls, steps: int) -> _Store:
        none = np.full(steps, -1, dtype=np.int64)
        return cls(none, none, none, none, none)


def _storage(b: Builder, problem: Problem, battery: BatteryState, *, balance: IntArray,
             name: str, plugged_s: float | None, floor_pct: float | None,
             top_pct: float | None, discharge: bool, end_value: float, owner_pen: float,
             end_value_above: float | None = None) -> _Store:
    """Charge, discharge and stored energy (cells, end of each step) of one battery, with its
    window as soft rows: ``soc + below >= floor``, ``soc − above <= top``. The energy left at
    the end is worth ``end_value`` per Wh or, with ``end_value_above`` (lower), that much per
    Wh above the start: ``soc_end = start + gain − loss``, the gain credited at the lower value
    and the loss charged at the higher, a concave value the LP keeps exact."""
    steps, step_s = problem.steps, problem.step_s
    absent = np.full(steps, -1, dtype=np.int64)
    plugged = steps if plugged_s is None else min(steps, math.ceil(plugged_s / step_s))
    if plugged == 0:
        return _Store.absent(steps)
    span = np.minimum(step_s, (plugged_s if plugged_s is not None else np.inf)
                      - np.arange(plugged) * step_s)
    charge_top = np.array([slot_wh(battery.max_charge_w, s) for s in span], dtype=np.float64)
    discharge_top = np.array([slot_wh(battery.max_discharge_w if discharge else 0, s)
                              for s in span], dtype=np.float64)
    if name in problem.stale:
        charge_top[0] = discharge_top[0] = 0.0
    capacity = float(battery.capacity_wh)
    start = battery.soc_pct / 100 * capacity
    eta_c, eta_d = battery.charge_efficiency, battery.discharge_efficiency
    cells = np.arange(plugged)
    charge = absent.copy()
    out = absent.copy()
    soc = absent.copy()
    charge[:plugged] = b.cols(plugged, upper=charge_top)
    out[:plugged] = b.cols(plugged, upper=discharge_top, cost=float(problem.wear_price))
    end_cost = np.zeros(plugged)
    if plugged == steps and end_value_above is None:
        end_cost[-1] = -end_value
    soc[:plugged] = b.cols(plugged, upper=capacity, cost=end_cost)
    if plugged == steps and end_value_above is not None:
        gain, loss = b.cols(1, cost=-end_value_above), b.cols(1, cost=end_value)
        end = b.rows(1, lower=np.array([start]), upper=np.array([start]))
        b.coef(end, soc[plugged - 1:plugged], 1.0)
        b.coef(end, gain, -1.0)
        b.coef(end, loss, 1.0)
    b.coef(balance[:plugged], charge[:plugged], -1.0)
    b.coef(balance[:plugged], out[:plugged], 1.0)
    rhs = np.zeros(plugged)
    rhs[0] = start
    dynamics = b.rows(plugged, lower=rhs, upper=rhs)
    b.coef(dynamics, soc[:plugged], 1.0)
    b.coef(dynamics[1:], soc[:plugged - 1], -1.0)
    b.coef(dynamics, charge[:plugged], -eta_c)
    b.coef(dynamics, out[:plugged], 1.0 / eta_d)
    both = cells[(charge_top > 0) & (discharge_top > 0)]
    if len(both):
        share = b.rows(len(both), upper=1.0)
        b.coef(share, charge[both], 1.0 / charge_top[both])
        b.coef(share, out[both], 1.0 / discharge_top[both])
    below = absent.copy()
    above = absent.copy()
    if floor_pct is not None and floor_pct > 0:
        below[:plugged] = b.cols(plugged, cost=owner_pen)
        rows = b.rows(plugged, lower=floor_pct / 100 * capacity)
        b.coef(rows, soc[:plugged], 1.0)
        b.coef(rows, below[:plugged], 1.0)
    if top_pct is not None and top_pct < 100:
        above[:plugged] = b.cols(plugged, cost=owner_pen)
        rows = b.rows(plugged, upper=top_pct / 100 * capacity)
        b.coef(rows, soc[:plugged], 1.0)
        b.coef(rows, above[:plugged], -1.0)
    return _Store(charge, out, soc, below, above)


def _ready_by(b: Builder, problem: Problem, vehicle: Vehicle, ev: _Store, owner_pen: float,
              shortfall: dict[str, int], fixed: dict[str, float]) -> None:
    """``ev_soc[due] + short >= target``: the energy the car must hold when it is due; past the
    horizon, less what it can still charge between the horizon's end and then."""
    battery = vehicle.battery
    target = vehicle.target_soc_pct / 100 * battery.capacity_wh
    start = battery.soc_pct / 100 * battery.capacity_wh
    due = vehicle.due_s
    steps, step_s = problem.steps, problem.step_s
    if due is None or due >= problem.horizon_s:  # still plugged in when the horizon ends
        after = 0.0 if due is None else slot_wh(battery.max_charge_w, due - problem.horizon_s)
        _short_row(b, vehicle.name, ev.soc[steps - 1],
                   target - after * battery.charge_efficiency, owner_pen, shortfall)
        return
    last = math.ceil(due / step_s) - 1
    if last < 0:
        if target > start:
            fixed[vehicle.name] = target - start
        return
    _short_row(b, vehicle.name, ev.soc[last], target, owner_pen, shortfall)


def _short_row(b: Builder, name: str, soc_col: np.int64, target: float, owner_pen: float,
               shortfall: dict[str, int]) -> None:
    if target <= 0:
        return
    short = b.cols(1, cost=owner_pen)
    row = b.rows(1, lower=target)
    b.coef(row, np.array([soc_col]), 1.0)
    b.coef(row, short, 1.0)
    shortfall[name] = int(short[0])


def _job(b: Builder, problem: Problem, job: FlexJob, balance: IntArray, owner_pen: float,
         shortfall: dict[str, int], fixed: dict[str, float]) -> IntArray:
    """A deferrable load: ``need − what fits after the horizon <= Σ run + short`` and
    ``Σ run <= need``, running at most ``max_w`` in the steps before it is due. Each Wh run
    saves ``later_price`` (what it would cost after the horizon: a constant for the part owed
    within it). Where the steps cost the same (a tie-break of under ``_TIE`` µ/Wh), it runs on
    the forecast's surplus first, the earliest first: a surplus in hand is sure, one forecast
    for later may not come (a cloud, the forecast's error, an inverter gone silent), and a job
    put off to its last surplus steps runs at its deadline on whatever is there then, the
    battery or the evening's grid. Off the surplus it runs as late as it can: out of the evening
    peak, and the plan, re-made every interval on fresher forecasts, keeps the choice open."""
    steps, step_s = problem.steps, problem.step_s
    cols = np.full(steps, -1, dtype=np.int64)
    active = min(steps, math.ceil(job.due_s / step_s))
    after = slot_wh(job.max_w, max(0.0, job.due_s - problem.horizon_s))
    owed = max(0, job.need_wh - after)
    if active <= 0:
        if owed > 0:
            fixed[job.name] = float(owed)
        return cols
    span = np.minimum(step_s, job.due_s - np.arange(active) * step_s)
    top = np.array([slot_wh(job.max_w, s) for s in span], dtype=np.float64)
    if job.name in problem.stale:
        top[0] = 0.0
    t = np.arange(active)
    surplus = np.asarray(problem.pv_wh[:active]) > np.asarray(problem.load_wh[:active])
    wait = _TIE * np.where(surplus, t / active, 1 + (active - t) / active) / 2
    cols[:active] = b.cols(active, upper=top, cost=wait - problem.later_price)
    b.coef(balance[:active], cols[:active], -1.0)
    row = b.rows(1, lower=float(owed), upper=float(job.need_wh))
    b.coef(np.repeat(row, active), cols[:active], 1.0)
    if owed > 0:
        short = b.cols(1, cost=owner_pen)
        b.coef(row, short, 1.0)
        shortfall[job.name] = int(short[0])
    return cols
