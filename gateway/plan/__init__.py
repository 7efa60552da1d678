"""The home's day planned as a linear programme (HiGHS), and its bids priced from the plan.

Usage::

    planner = Planner(time_limit_s=0.5)
    outcome = planner.plan(problem, max_buy_wh=limits.import_wh, max_sell_wh=limits.export_wh)
    outcome.interval   # ems.Plan for the interval being bid for (battery, loads, residual)
    outcome.curve      # BidCurve: sell steps ascending, buy steps descending
    outcome.day        # DayPlan with every step and the violations, or None (heuristic)

Modules, one job each: ``problem`` (what is asked), ``build`` (the linear programme) and
``model`` (its matrix), ``solve`` (HiGHS with a time limit), ``result`` (the day plan and what it
could not keep), ``values`` (the bid curve from the value of energy), ``planner`` (optimiser or
heuristic fallback), ``bidding`` (the gateway's problem and bid), ``tariff_schedule`` (prices
through the day) read by ``tariff_file`` from ``tariff_csv`` and ``tariff_toml`` files,
``grid_limits`` (the grid operator's limits per step).
Pure apart from the solver: readings, forecasts and prices in, plans out.
"""

from gateway.plan.build import build
from gateway.plan.grid_limits import GridConfig, GridLimits
from gateway.plan.planner import (
    Outcome,
    PlanCounters,
    Planner,
    heuristic,
    interval_plan,
    plan_day,
)
from gateway.plan.problem import BATTERY, GridCaps, MarketOutlook, Problem, Vehicle
from gateway.plan.result import DayPlan, Violation
from gateway.plan.solve import SolveFailed, Solver
from gateway.plan.tariff_csv import parse_csv
from gateway.plan.tariff_file import load_schedule
from gateway.plan.tariff_schedule import ScheduleError, TariffSchedule
from gateway.plan.tariff_toml import parse_toml
from gateway.plan.values import MAX_STEPS, BidCurve, bid_curve

__all__ = [
    "BATTERY",
    "MAX_STEPS",
    "BidCurve",
    "DayPlan",
    "GridCaps",
    "GridConfig",
    "GridLimits",
    "MarketOutlook",
    "Outcome",
    "PlanCounters",
    "Planner",
    "Problem",
    "ScheduleError",
    "SolveFailed",
    "Solver",
    "TariffSchedule",
    "Vehicle",
    "Violation",
    "bid_curve",
    "build",
    "heuristic",
    "interval_plan",
    "load_schedule",
    "parse_csv",
    "plan_day",
    "parse_toml",
]
