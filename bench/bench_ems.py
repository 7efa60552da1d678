"""Solve time of the home's day plan (``gateway/plan``) beside today's heuristic, and its memory.

The problems are seeded homes of one day at the market's interval (96 steps of 15 min): PV with
clouds under a 6 kW inverter, a household load with morning and evening peaks, a 10 kWh / 5 kW
battery, two deferrable loads (a 3 kWh water heater, a 1.2 kWh dishwasher) with deadlines, an
EV (60 kWh, 11 kW, V2G down to 40 %) due by morning, a dynamic import tariff (a day-ahead curve
times 1.19 plus 180 µ/Wh of fees, fixed feed-in 80), the neighbourhood market expected at the
midpoint, and the grid operator's limits (5 kW export, 14 kW import, §14a dimming at 4.2 kW
from 17:00 to 20:00). The negative-price set adds two midday hours at −400 µ/Wh spot: importing
is paid (−296 with the fees) and exporting costs the spot, so a full battery would charge and
discharge at once to be paid for its losses; the planner branches on those steps itself
(``gateway/plan/planner.py``), and the textbook MILP (a binary per battery and paid step, HiGHS's
branch and cut) is timed beside it on the same programmes, with the optima compared.

Figures per set: median and worst over the seeds of
* **solve**: ``plan_day``: ``build`` + HiGHS, with the branching on paid steps, the day's plan;
* **plan + curve**: ``Planner.plan``, the above plus the bid curve's warm re-solves;
* **heuristic**: ``ems.plan_interval`` with ``flex_plan.plan_flex`` (``planner.heuristic``) run
  for each of the same 96 steps, the state rolled forward, as the gateway runs it over a day.
Wall time and CPU time (``process_time``: HiGHS runs single-threaded, so it is the solver's
own cost; on a machine other work loads, wall time moves and CPU time much less).

Then the money of the same days without the market (grid only), optimiser against heuristic,
and in a fresh interpreter the resident memory highspy adds to a process that already has
numpy and the gateway's EMS (the gateway's own RSS budget is checked by ``bench_gateway``).
With scipy importable (it is not a dependency), ``scipy.optimize.milp`` on the same programmes
and its import's memory are printed too: the measured reason the plan uses highspy directly.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import highspy
import numpy as np

from bench._report import fresh_python, line, machine
from gateway.ems import BatteryState, Preferences
from gateway.flex_plan import FlexJob
from gateway.plan import (
    GridLimits,
    MarketOutlook,
    Planner,
    Problem,
    Solver,
    Vehicle,
    build,
    heuristic,
    plan_day,
)

SEED = 20261117
STEPS = 96
STEP_S = 900.0
PREFS = Preferences(min_sell_price=120, max_buy_price=250, reserve_pct=20, soc_max_pct=95)
LIMITS = GridLimits(export_w=5_000, import_w=14_000, dimmed_w=4_200, dimming=((1020, 1200),))


def home(seed: int, *, negative_hours: bool = False) -> Problem:
    """One seeded day from midnight (UTC as local time)."""
    rng = random.Random(seed)
    peak = rng.uniform(4_000, 8_000)
    pv = []
    for t in range(STEPS):
        sun = math.sin(math.pi * (t - 26) / 48) if 26 <= t < 74 else 0.0
        pv.append(round(max(0.0, sun) * peak * rng.uniform(0.5, 1.0) * STEP_S / 3600))
    load = [round((rng.uniform(150, 350) + (900 if 28 <= t < 34 else 0)
                   + (1_200 if 70 <= t < 88 else 0)) * STEP_S / 3600) for t in range(STEPS)]
    spot = [60 + 50 * math.cos(2 * math.pi * (t - 76) / STEPS) + rng.uniform(-15, 15)
            for t in range(STEPS)]
    if negative_hours:
        spot[48:56] = [-400.0] * 8
    imports = tuple(round(s * 1.19 + 180) for s in spot)
    exports = tuple(min(80, round(s)) for s in spot)  # below zero, exporting costs the spot
    market = MarketOutlook(price=tuple((i + e) // 2 for i, e in zip(imports, exports,
                                                                    strict=True)),
                           buy_wh=(1_500,) * STEPS, sell_wh=(1_500,) * STEPS)
    battery = BatteryState(capacity_wh=10_000, soc_pct=rng.uniform(15, 90), max_charge_w=5_000,
                           max_discharge_w=5_000)
    jobs = (FlexJob(name="water-heater", need_wh=3_000, max_w=2_000,
                    due_s=rng.uniform(6, 20) * 3600),
            FlexJob(name="dishwasher", need_wh=1_200, max_w=1_800,
                    due_s=rng.uniform(4, 24) * 3600))
    ev = Vehicle(name="ev", battery=BatteryState(
        capacity_wh=60_000, soc_pct=rng.uniform(30, 50), max_charge_w=11_000,
        max_discharge_w=7_000, charge_efficiency=0.92, discharge_efficiency=0.92),
        target_soc_pct=80, ready_by_s=7 * 3600 + rng.uniform(-1, 1) * 3600,
        departs_s=8 * 3600, v2g_min_soc_pct=40)
    return Problem(step_s=STEP_S, pv_wh=tuple(pv), load_wh=tuple(load), import_price=imports,
                   export_price=exports, prefs=PREFS, battery=battery, jobs=jobs, vehicle=ev,
                   market=market, grid=LIMITS.caps(start_ms=0, step_s=STEP_S, steps=STEPS),
                   pv_max_w=6_000)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall s, cpu s, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def solve_day(problem: Problem, solver: Solver) -> None:
    plan_day(solver, problem, time_limit_s=10.0)


def _paid_to_take(problem: Problem) -> tuple[int, ...]:
    """Steps where taking more energy earns money (a battery's losses could be sold): where the
    textbook formulation needs its binaries."""
    market = problem.market
    return tuple(t for t in range(problem.steps)
                 if problem.import_price[t] < 0
                 or (market is not None and market.price[t] < 0 and market.buy_wh[t] > 0))


def textbook_milp(problem: Problem) -> float:
    """The day with a binary per battery and paid step (charge xor discharge), solved by HiGHS's
    MILP: build + solve time is what the planner's own branching is measured against."""
    model = build(problem)
    cols = model.columns
    highs = highspy.Highs()  # type: ignore[no-untyped-call]
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    highs.addVars(model.num_col, model.lower, model.upper)
    highs.changeColsCost(model.num_col, np.arange(model.num_col), model.cost)
    highs.addRows(model.num_row, model.row_lower, model.row_upper, len(model.value),
                  model.starts[:-1], model.index, model.value)
    for t in _paid_to_take(problem):
        for charge, out in ((cols.charge, cols.discharge), (cols.ev_charge, cols.ev_discharge)):
            if charge[t] < 0 or out[t] < 0:
                continue
            mode = highs.getNumCol()
            highs.addVar(0.0, 1.0)
            highs.changeColIntegrality(mode, highspy.HighsVarType.kInteger)
            top_c, top_d = model.upper[charge[t]], model.upper[out[t]]
            highs.addRow(-highspy.kHighsInf, 0.0, 2, np.array([charge[t], mode]),
                         np.array([1.0, -top_c]))
            highs.addRow(-highspy.kHighsInf, top_d, 2, np.array([out[t], mode]),
                         np.array([1.0, top_d]))
    highs.run()
    assert highs.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return float(highs.getInfo().objective_function_value)


def heuristic_day(problem: Problem) -> tuple[float, float, float]:
    """(wall s, cpu s, grid money µ) of the heuristic planning each step of the day in turn,
    its battery, loads and car rolled forward as it planned them."""
    wall = cpu = money = 0.0
    battery, jobs, ev = problem.battery, problem.jobs, problem.vehicle
    for t in range(problem.steps):
        now = replace(problem, pv_wh=problem.pv_wh[t:], load_wh=problem.load_wh[t:],
                      import_price=problem.import_price[t:],
                      export_price=problem.export_price[t:], market=None, grid=None,
                      battery=battery, jobs=jobs, vehicle=ev)
        took_wall, took_cpu, plan = timed(lambda now=now: heuristic(now))
        wall, cpu = wall + took_wall, cpu + took_cpu
        meter = plan.load_wh + plan.flex_wh + plan.battery_wh - plan.pv_wh
        money += (problem.import_price[t] * max(0, meter)
                  - problem.export_price[t] * max(0, -meter))
        runs = dict(plan.flex)
        if battery is not None:
            cells = (plan.battery_wh * battery.charge_efficiency if plan.battery_wh > 0
                     else plan.battery_wh / battery.discharge_efficiency)
            battery = replace(battery, soc_pct=min(100.0, max(
                0.0, battery.soc_pct + 100 * cells / battery.capacity_wh)))
        jobs = tuple(replace(j, need_wh=max(0, j.need_wh - runs.get(j.name, 0)),
                             due_s=max(0.0, j.due_s - STEP_S)) for j in jobs)
        if ev is not None:
            gone = ev.departs_s is not None and ev.departs_s <= STEP_S
            pack = ev.battery
            charged = runs.get(ev.name, 0) * pack.charge_efficiency
            ev = None if gone else replace(
                ev, battery=replace(pack, soc_pct=min(100.0, pack.soc_pct
                                                      + 100 * charged / pack.capacity_wh)),
                ready_by_s=None if ev.ready_by_s is None else max(0.0, ev.ready_by_s - STEP_S),
                departs_s=None if ev.departs_s is None else ev.departs_s - STEP_S)
    return wall, cpu, money


def _stats(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e3:.1f} ms, worst {max(values) * 1e3:.1f} ms"


def run_set(name: str, seeds: range, *, negative_hours: bool) -> None:
    """Solve, plan + curve and the heuristic's day on the same seeded homes."""
    problems = [home(s, negative_hours=negative_hours) for s in seeds]
    solver, planner = Solver(), Planner(time_limit_s=10.0, curve_time_limit_s=10.0)
    for problem in problems[:2]:  # warm-up: HiGHS's first run starts its scheduler
        solve_day(problem, solver)
        planner.plan(problem, max_buy_wh=3_000, max_sell_wh=3_000)
    solve_wall, solve_cpu, plan_wall, plan_cpu, heur_wall, heur_cpu = ([] for _ in range(6))
    for problem in problems:
        wall, cpu, _ = timed(lambda p=problem: solve_day(p, solver))
        solve_wall.append(wall)
        solve_cpu.append(cpu)
        wall, cpu, outcome = timed(lambda p=problem: planner.plan(p, max_buy_wh=3_000,
                                                                   max_sell_wh=3_000))
        assert outcome.source == "optimiser", outcome.reason
        plan_wall.append(wall)
        plan_cpu.append(cpu)
        wall, cpu, _ = heuristic_day(problem)
        heur_wall.append(wall)
        heur_cpu.append(cpu)
    print(f"{name} ({len(problems)} seeded homes, {STEPS} steps, "
          f"{build(problems[0]).num_col} columns x {build(problems[0]).num_row} rows):")
    print(f"  solve (build + HiGHS) wall: {_stats(solve_wall)}; cpu: {_stats(solve_cpu)}")
    print(f"  plan + bid curve      wall: {_stats(plan_wall)}; cpu: {_stats(plan_cpu)}")
    print(f"  heuristic, 96 steps   wall: {_stats(heur_wall)}; cpu: {_stats(heur_cpu)}")
    print("  " + line(f"{name}: day solve, median cpu", statistics.median(solve_cpu) * 1e3,
                      "ms", "heuristic's 96 steps", statistics.median(heur_cpu) * 1e3,
                      lower_is_better=True))
    if negative_hours:
        milp_cpu, gaps = [], []
        for problem in problems:
            _, cpu, optimum = timed(lambda p=problem: textbook_milp(p))
            milp_cpu.append(cpu)
            day = planner.plan(problem, max_buy_wh=0, max_sell_wh=0).day
            assert day is not None
            gaps.append(abs(day.objective - optimum) / max(1.0, abs(optimum)))
        print("  " + line(f"{name}: plan + curve, median cpu", statistics.median(plan_cpu) * 1e3,
                          "ms", "textbook MILP, solve only", statistics.median(milp_cpu) * 1e3,
                          lower_is_better=True)
              + f"; MILP worst {max(milp_cpu) * 1e3:.0f} ms; optima differ by at most "
              f"{max(gaps):.1e} (relative)")


def money(seeds: range) -> None:
    """The grid money of the same days, optimiser and heuristic, without the market and the
    grid operator's limits (the heuristic knows neither)."""
    planner = Planner(time_limit_s=10.0)
    ours, theirs = [], []
    for seed in seeds:
        problem = replace(home(seed), market=None, grid=None)
        day = planner.plan(problem, max_buy_wh=0, max_sell_wh=0).day
        assert day is not None
        ours.append(day.cost)
        theirs.append(heuristic_day(problem)[2])
    saved = [t - o for o, t in zip(ours, theirs, strict=True)]
    print(f"grid money of the day (no market, {len(ours)} homes): optimiser median "
          f"{statistics.median(ours) / 1e6:.2f}, heuristic {statistics.median(theirs) / 1e6:.2f} "
          f"(units of 10^6 µ); the optimiser saves median {statistics.median(saved) / 1e6:.2f}, "
          f"least {min(saved) / 1e6:.2f} (ends with its own end value of stored energy)")


_RSS = """
import gc, psutil
rss = lambda: psutil.Process().memory_info().rss / 2**20
import numpy, pydantic, gateway.config, gateway.ems, gateway.flex_plan  # the gateway has these
base = rss()
import {module}
after_import = rss()
{work}
gc.collect()
print(f"{{after_import - base:.1f}} {{rss() - base:.1f}}")
"""
_PLAN = """
from bench.bench_ems import home
from gateway.plan import Planner
planner = Planner()
for seed in range(5):
    planner.plan(home(seed), max_buy_wh=3_000, max_sell_wh=3_000)
"""


def memory() -> None:
    """RSS (MiB) added, in a fresh interpreter, by importing the solver and then by planning."""
    for module, work in (("gateway.plan", _PLAN), ("scipy.optimize", "")):
        code = _RSS.format(module=module, work=work)
        out, error = fresh_python(code)
        if error is not None:
            print(f"RSS of {module}: not measured ({error})")
            continue
        imported, worked = out.split()[-2:]
        after = f", {worked} MiB after five 96-step plans with curves" if work else ""
        print(f"RSS added to a process with numpy, pydantic and the gateway's config and EMS by "
              f"importing {module}: {imported} MiB{after}")


def scipy_milp(seeds: range) -> None:
    """The same programmes through ``scipy.optimize.milp`` (HiGHS inside scipy), if present."""
    try:
        from scipy.optimize import Bounds, LinearConstraint, milp  # type: ignore[import-untyped]
        from scipy.sparse import csr_array  # type: ignore[import-untyped]
    except ImportError:
        print("scipy.optimize.milp: scipy not installed, skipped (not a dependency)")
        return
    walls, cpus = [], []
    for seed in seeds:
        def solve(seed: int = seed) -> None:
            model = build(home(seed))
            matrix = csr_array((model.value, model.index, model.starts),
                               shape=(model.num_row, model.num_col))
            result = milp(model.cost, constraints=LinearConstraint(
                matrix, model.row_lower, model.row_upper),
                bounds=Bounds(model.lower, model.upper))
            assert result.status == 0, result.message

        wall, cpu, _ = timed(solve)
        walls.append(wall)
        cpus.append(cpu)
    print(f"scipy.optimize.milp on the LP days, build + solve: wall {_stats(walls)}; cpu "
          f"{_stats(cpus)} (no warm start for the curve's re-solves)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=30, help="homes per set")
    args = parser.parse_args()
    print(machine())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    seeds = range(SEED, SEED + args.seeds)
    run_set("LP day", seeds, negative_hours=False)
    run_set("negative-price day", range(SEED, SEED + max(3, args.seeds // 3)),
            negative_hours=True)
    scipy_milp(seeds)
    money(seeds)
    memory()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
