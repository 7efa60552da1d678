"""Plan the day with the optimiser, or with today's heuristic when the optimiser cannot.

Every plan is made by one of two: the optimiser (``problem`` → HiGHS → ``DayPlan`` and a bid
curve) or, when HiGHS fails or runs out of its time, the heuristic the gateway has always run
(``gateway/ems.py`` ``plan_interval`` with ``gateway/flex_plan.py``'s ``plan_flex``). Either way
the caller gets an ``Outcome`` with the same two things for the interval being bid for: an
``ems.Plan`` (the battery, the loads' energy, the residual at the meter, a one-step bid) and a
``BidCurve``. A fallback is counted by reason and logged; it never raises.

The interval's ``ems.Plan`` is in whole Wh and balances exactly: ``pv − load − flex = battery
+ residual``. The vehicle's charging is one of its ``flex`` entries; a V2G discharge the plan
counts on in the first step is left out of it until a bidirectional charger can be commanded
(the day plan keeps it). Until bids carry curves, the one-step bid offers the residual at what
all of it is worth on the curve.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.ems import Plan, plan_interval
from gateway.flex_plan import FlexJob, plan_flex
from gateway.lookahead import MAX_BLOCKS, Ahead
from gateway.plan.build import build
from gateway.plan.model import Model
from gateway.plan.problem import BATTERY, Problem
from gateway.plan.result import DayPlan, read
from gateway.plan.solve import SolveFailed, Solver
from gateway.plan.values import BidCurve, bid_curve
from protocols.clearing import Tariffs

log = logging.getLogger(__name__)

Source = Literal["optimiser", "heuristic"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The plan for the interval being bid for, and the day's when the optimiser made it.

    ``reason`` says why the heuristic planned (None when the optimiser did).
    """

    interval: Plan
    curve: BidCurve
    day: DayPlan | None
    source: Source
    reason: str | None = None


@dataclass
class PlanCounters:
    """Plans made by the optimiser, and fallbacks to the heuristic by reason."""

    optimised: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)


MAX_TIME_LIMIT_S = 10.0
"""The most solver time a plan may be given (``[plan] time_limit_s``): a control period's worth
of CPU on a Pi is far more than a 96-step day needs."""


class PlanConfig(BaseModel):
    """``[plan]`` of the gateway config: the heuristic (the default), or the optimiser, which
    falls back to it; ``time_limit_s`` bounds the day's solve (seconds of solver time), the bid
    curve's re-solves get half of it.

    The optimiser is opt-in until it keeps the sunny day's "no home pays more than without the
    market" and its deliveries follow its cleared positions (docs/homeowner-guide.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    planner: Literal["optimiser", "heuristic"] = "heuristic"
    time_limit_s: float = Field(default=0.5, gt=0, le=MAX_TIME_LIMIT_S)

    def make(self) -> Planner | None:
        """The planner the trader plans with; None: the heuristic alone."""
        if self.planner == "heuristic":
            return None
        return Planner(time_limit_s=self.time_limit_s, curve_time_limit_s=self.time_limit_s / 2)


class Planner:
    """Plans with one long-lived ``Solver``; ``time_limit_s`` bounds the day's solve and the
    curve's re-solves each (seconds of solver time)."""

    def __init__(self, *, time_limit_s: float = 0.5, curve_time_limit_s: float = 0.25) -> None:
        self.time_limit_s = time_limit_s
        self.curve_time_limit_s = curve_time_limit_s
        self.counters = PlanCounters()
        self._solver = Solver()

    def plan(self, problem: Problem, *, max_buy_wh: int, max_sell_wh: int) -> Outcome:
        """Plan ``problem``; the curve's sides are bounded by ``max_buy_wh``/``max_sell_wh``."""
        try:
            day, curve = self._optimise(problem, max_buy_wh=max_buy_wh,
                                        max_sell_wh=max_sell_wh)
        except SolveFailed as exc:
            return self.fallback(heuristic(problem), exc.reason)
        self.counters.optimised += 1
        return Outcome(interval=interval_plan(problem, day, curve), curve=curve, day=day,
                       source="optimiser")

    def fallback(self, interval: Plan, reason: str) -> Outcome:
        """The heuristic's ``interval`` as this planner's outcome, counted and logged under
        ``reason``: whoever planned in the optimiser's place, the owner sees it and why."""
        self.counters.fallbacks[reason] += 1
        log.warning("plan: the heuristic plans this interval (%s)", reason)
        return Outcome(interval=interval, curve=_as_curve(interval), day=None,
                       source="heuristic", reason=reason)

    def _optimise(self, problem: Problem, *, max_buy_wh: int,
                  max_sell_wh: int) -> tuple[DayPlan, BidCurve]:
        model, day = plan_day(self._solver, problem, time_limit_s=self.time_limit_s)
        curve = bid_curve(self._solver, model, problem, max_buy_wh=max_buy_wh,
                          max_sell_wh=max_sell_wh, time_limit_s=self.curve_time_limit_s)
        return day, curve


def plan_day(solver: Solver, problem: Problem, *, time_limit_s: float) -> tuple[Model, DayPlan]:
    """The day's plan (``SolveFailed`` when there is none in ``time_limit_s`` of solver time);
    ``solver`` is left holding it, ready for the bid curve's re-solves."""
    model = build(problem)
    solver.load(model)
    start = solver.clock()
    solver.run(time_limit_s=time_limit_s)
    held = _hold_wasting(problem, model, solver,
                         time_left=lambda: time_limit_s - (solver.clock() - start))
    return model, read(problem, model, solver.values(), solver.row_duals(), solver.objective(),
                       held=held)


_WASTE_WH = 1e-6


def _hold_wasting(problem: Problem, model: Model, solver: Solver,
                  time_left: Callable[[], float]) -> tuple[int, ...]:
    """Branch and bound where the plan charges and discharges a battery at once (a step that
    pays the home to take energy, or cells above the owner's top with nowhere for the energy to
    go: both make wasting it in the round trip pay): solve once with its discharge held at zero
    and once with its charge, keep the better, prune any branch whose relaxation is no better
    than the best plan found (``gateway/plan/build.py`` says why). Leaves ``solver`` holding the
    best plan; returns the steps where something was held (none, and no re-solve, when the
    plan wastes nothing).

    Depth first, discharge held first: in a step that pays for every Wh taken that is nearly
    always the answer, so the first dive finds the optimum and the other branches cost one
    warm re-solve each.
    """
    cols = model.columns
    pairs = [(int(charge[t]), int(out[t])) for t in range(problem.steps)
             for charge, out in ((cols.charge, cols.discharge),
                                 (cols.ev_charge, cols.ev_discharge))
             if charge[t] >= 0 and out[t] >= 0]
    step = {col: t for t in range(problem.steps)
            for charge, out in ((cols.charge, cols.discharge), (cols.ev_charge, cols.ev_discharge))
            for col in (int(charge[t]), int(out[t])) if col >= 0}
    x = solver.values()
    if not any(min(x[c], x[o]) > _WASTE_WH for c, o in pairs):
        return ()
    best: list[tuple[float, frozenset[int]]] = []

    def hold(held: frozenset[int]) -> None:
        for charge, out in pairs:
            for col in (charge, out):
                solver.bound(col, float(model.lower[col]),
                             0.0 if col in held else float(model.upper[col]))
        solver.run(time_limit_s=time_left())

    def branch(held: frozenset[int]) -> None:
        hold(held)
        objective = solver.objective()
        if best and objective >= best[0][0] - 1e-9 * max(1.0, abs(best[0][0])):
            return
        x = solver.values()
        wasting = next(((c, o) for c, o in pairs if min(x[c], x[o]) > _WASTE_WH), None)
        if wasting is None:
            best[:] = [(objective, held)]
            return
        charge, out = wasting
        branch(held | {out})
        branch(held | {charge})

    branch(frozenset())
    held = best[0][1]
    hold(held)
    return tuple(sorted({step[col] for col in held}))


def interval_plan(problem: Problem, day: DayPlan, curve: BidCurve) -> Plan:
    """The first step of ``day`` in whole Wh, with the one-step bid from ``curve``."""
    battery = round(day.charge_wh[0] - day.discharge_wh[0])
    flex = {name: round(runs[0]) for name, runs in day.jobs}
    if problem.vehicle is not None:
        # Below 0 when the car feeds the home (V2G): supply in the residual, a setpoint in dispatch.
        flex[problem.vehicle.name] = round(day.ev_charge_wh[0] - day.ev_discharge_wh[0])
    pv, load = round(day.pv_wh[0]), problem.load_wh[0]
    residual = pv - load - sum(flex.values()) - battery
    step = _bid_step(residual, curve, problem.prefs.min_bid_wh)
    side, energy, price = step if step is not None else (None, 0, 0)
    return Plan(pv_wh=pv, load_wh=load, battery_wh=battery, residual_wh=residual, side=side,
                energy_wh=energy, limit_price=price, flex=tuple(sorted(flex.items())))


def _bid_step(residual: int, curve: BidCurve, min_bid_wh: int
              ) -> tuple[Literal["buy", "sell"], int, int] | None:
    """The residual (as far as the curve offers it) at one price: what the whole quantity is
    worth to the home, the energy-weighted mean of the curve's steps it spans, rounded in the
    home's favour."""
    side: Literal["buy", "sell"] = "sell" if residual > 0 else "buy"
    steps = curve.sell if side == "sell" else curve.buy
    energy = min(abs(residual), sum(s.wh for s in steps))
    if energy < min_bid_wh or energy <= 0:
        return None
    left, money = energy, 0
    for step in steps:
        take = min(left, step.wh)
        money += take * step.price
        left -= take
    price = -(-money // energy) if side == "sell" else money // energy
    return side, energy, price


def heuristic(problem: Problem) -> Plan:
    """Today's plan for the first step: loads by ``plan_flex`` (the vehicle as one of them,
    owing what its target still needs), the battery by ``plan_interval`` looking ahead over the
    rest of the problem's forecast, priced with the first step's tariffs."""
    step_s = problem.step_s
    jobs = [j for j in problem.jobs if j.name not in problem.stale]
    vehicle = problem.vehicle
    if vehicle is not None and vehicle.name not in problem.stale:
        pack = vehicle.battery
        owed = (vehicle.target_soc_pct - pack.soc_pct) / 100 * pack.capacity_wh
        due = vehicle.due_s if vehicle.due_s is not None else problem.horizon_s
        jobs.append(FlexJob(name=vehicle.name,
                            need_wh=max(0, math.ceil(owed / pack.charge_efficiency)),
                            max_w=pack.max_charge_w, due_s=due))
    pv, load = problem.pv_wh[0], problem.load_wh[0]
    runs = plan_flex(jobs, slot_s=step_s, surplus_wh=pv - load, period_s=step_s, margin_s=0.0)
    battery = None if BATTERY in problem.stale else problem.battery
    blocks = tuple(zip(problem.pv_wh[1:1 + MAX_BLOCKS], problem.load_wh[1:1 + MAX_BLOCKS],
                       strict=True))
    return plan_interval(pv_wh=pv, load_wh=load, battery=battery, prefs=problem.prefs,
                         tariffs=band(problem.import_price[0], problem.export_price[0]),
                         interval_s=step_s, flex=runs, ahead=Ahead(block_s=step_s, blocks=blocks))


def band(import_price: int, export_price: int) -> Tariffs:
    """The first step's prices as the heuristic's ``Tariffs`` (``0 <= feed-in < retail``):
    a negative price is taken as zero, a step with no spread gets one of 1 µ/Wh."""
    retail = max(import_price, export_price + 1, 1)
    return Tariffs(retail_price=retail, feed_in_price=min(max(export_price, 0), retail - 1))


def _as_curve(plan: Plan) -> BidCurve:
    """The heuristic's bid as a curve."""
    if plan.side is None or plan.energy_wh <= 0:
        return BidCurve()
    steps = plan.curve()
    return BidCurve(sell=steps) if plan.side == "sell" else BidCurve(buy=steps)
