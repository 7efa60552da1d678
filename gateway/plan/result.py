"""The day's plan as the optimiser solved it, and what it could not keep.

Energies per step in Wh, as floats: the programme's solution to the solver's tolerance (1e-7
Wh), never rounded, so every identity the programme holds can be checked on the plan itself:
the balance ``pv + grid_import − grid_export + market + discharge + ev_discharge = load +
Σ jobs + charge + ev_charge`` in every step. ``meter_wh`` (+ import) is what the grid
operator's limits bound. Whole Wh are made where the plan meets the devices and the market
(``gateway/plan/planner.py``, ``gateway/plan/values.py``).

A ``Violation`` is one soft limit the plan had to break, with the worst amount: the reason a
home's battery sits under its reserve or its car will not be full by morning is shown to the
owner, not hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gateway.plan.model import FloatArray, IntArray, Model
from gateway.plan.problem import BATTERY, Problem

Kind = Literal["below-reserve", "above-top", "below-v2g-floor", "deadline", "import-limit"]
_NOISE_WH = 1e-6
"""Slack below this is the solver's tolerance, not a violation."""


@dataclass(frozen=True, slots=True)
class Violation:
    """``kind`` broken for ``device`` by ``wh`` at worst, in ``steps`` steps from ``first_step``
    (a deadline: the energy it misses, in the one step it is due)."""

    kind: Kind
    device: str
    wh: float
    steps: int
    first_step: int


@dataclass(frozen=True, slots=True)
class DayPlan:
    """One value per step for each flow; ``soc_wh``/``ev_soc_wh`` are the cells' energy at each
    step's end. ``value`` is the marginal value of energy per step (µ/Wh: what one more Wh of
    load in that step would cost the day). ``cost`` is the day's money (µ, + paid), without
    slack penalties or the end value; ``objective`` the programme's optimum with both."""

    step_s: float
    pv_wh: tuple[float, ...]
    load_wh: tuple[int, ...]
    grid_import_wh: tuple[float, ...]
    grid_export_wh: tuple[float, ...]
    market_wh: tuple[float, ...]
    charge_wh: tuple[float, ...]
    discharge_wh: tuple[float, ...]
    soc_wh: tuple[float, ...]
    ev_charge_wh: tuple[float, ...]
    ev_discharge_wh: tuple[float, ...]
    ev_soc_wh: tuple[float, ...]
    jobs: tuple[tuple[str, tuple[float, ...]], ...]
    value: tuple[float, ...]
    cost: float
    violations: tuple[Violation, ...]
    objective: float
    held: tuple[int, ...] = ()
    """Steps that paid the home to take energy where a battery would have charged and
    discharged at once (to be paid for its losses): one of the two was held at zero."""

    def meter_wh(self, step: int) -> float:
        """Net energy through the meter in ``step``: + import, − export."""
        return (self.grid_import_wh[step] - self.grid_export_wh[step]
                + self.market_wh[step])

    def job_wh(self, step: int) -> float:
        return sum(runs[step] for _, runs in self.jobs)


def read(problem: Problem, model: Model, x: FloatArray, row_dual: FloatArray,
         objective: float, *, held: tuple[int, ...] = ()) -> DayPlan:
    """The plan in solution ``x`` (``row_dual``: the row duals, for the marginal values)."""
    cols = model.columns

    def take(idx: IntArray) -> tuple[float, ...]:
        out = np.where(idx >= 0, x[np.maximum(idx, 0)], 0.0)
        return tuple(float(v) for v in out)

    money = (np.asarray(problem.import_price) * x[cols.grid_import]
             - np.asarray(problem.export_price) * x[cols.grid_export])
    if problem.market is not None:
        money = money + np.asarray(problem.market.price) * x[cols.market]
    return DayPlan(
        step_s=problem.step_s, pv_wh=take(cols.pv), load_wh=problem.load_wh,
        grid_import_wh=take(cols.grid_import), grid_export_wh=take(cols.grid_export),
        market_wh=take(cols.market), charge_wh=take(cols.charge),
        discharge_wh=take(cols.discharge), soc_wh=take(cols.soc),
        ev_charge_wh=take(cols.ev_charge), ev_discharge_wh=take(cols.ev_discharge),
        ev_soc_wh=take(cols.ev_soc),
        jobs=tuple((name, take(idx)) for name, idx in cols.jobs.items()),
        value=tuple(float(v) for v in row_dual[model.balance_rows]),
        cost=float(money.sum()),
        violations=_violations(problem, model, x), objective=objective, held=held,
    )


def _violations(problem: Problem, model: Model, x: FloatArray) -> tuple[Violation, ...]:
    cols = model.columns
    ev = problem.vehicle.name if problem.vehicle is not None else ""
    found = [v for v in (
        _worst("below-reserve", BATTERY, cols.below_reserve, x),
        _worst("above-top", BATTERY, cols.above_top, x),
        _worst("below-v2g-floor", ev, cols.ev_below_floor, x),
        _worst("import-limit", "grid", cols.over_import, x),
    ) if v is not None]
    for name, col in cols.shortfall.items():
        if x[col] > _NOISE_WH:
            found.append(Violation("deadline", name, float(x[col]), 1, _due_step(problem, name)))
    for name, wh in model.fixed_shortfall.items():
        found.append(Violation("deadline", name, wh, 1, 0))
    return tuple(found)


def _worst(kind: Kind, device: str, idx: IntArray, x: FloatArray) -> Violation | None:
    present = idx >= 0
    if not present.any():
        return None
    slack = np.where(present, x[np.maximum(idx, 0)], 0.0)
    hit = np.flatnonzero(slack > _NOISE_WH)
    if not len(hit):
        return None
    return Violation(kind, device, float(slack.max()), len(hit), int(hit[0]))


def _due_step(problem: Problem, name: str) -> int:
    """The step a job's or the vehicle's energy is due in (the last, when after the horizon)."""
    due = problem.vehicle.due_s if problem.vehicle and problem.vehicle.name == name else next(
        (j.due_s for j in problem.jobs if j.name == name), None)
    if due is None or due >= problem.horizon_s:
        return problem.steps - 1
    return max(0, int(-(-due // problem.step_s)) - 1)
