"""What energy in the interval being bid for is worth to the home: its bid curve.

Hold the first step's market position at ``q`` (+ bought, − sold) and re-solve the day: the
optimal cost ``V(q)`` is convex and piecewise linear in ``q`` (the value function of a linear
programme in one right-hand side). Buying the chunk ``[a, b]`` saves ``V(a) − V(b)``, so the home
pays up to that over ``b − a`` per Wh for it, and less for each further chunk; selling costs the
mirror image, more for each further chunk. The curve is therefore monotone by construction: sell
steps ascend, buy steps descend, and the first buy price never exceeds the first sell price.

Duals alone do not price a curve: the balance row's dual is one subgradient of ``V`` at the plan's
own position (any value between the slopes either side of a kink, where the plan usually sits),
so it prices the first Wh at best. Re-solves price every chunk exactly, and warm-started from the
last basis each costs a fraction of the day's first solve. The duals still earn their keep in
placing the chunks: the column's dual at each re-solve is a tangent of ``V``, and splitting the
chunk where the chord lies furthest above the tangents (the sandwich method for convex
functions) finds a single kink between two points exactly, so a few re-solves place the up to
eight steps on the kinks that matter (the energy the plan would export anyway, what the battery
can still take, what the evening needs).

The first step's loads (each deferrable job, the car's charging and feeding) are held at the
plan's own runs while the curve is priced: the loads follow the plan, and a step cleared beyond
the residual is delivered from or into the battery (``gateway.dispatch``), so the curve prices
only what the battery and the grid can do with it. Left free, a load owed later would price the
energy it could take now (at the import price, past a cut horizon) and the battery would be
handed energy bought at a load's value.

A chunk worth more than the step's export price and less than its import price is energy the
cells move for the trade (kept in them, stored, or given from them), and it is priced with its
delivery risk (``DELIVERY_RISK``): at its plain value a cleared chunk gains the home nothing (a
uniform price is often the home's own step), while each Wh the cells cannot move when the
interval turns out other than forecast is settled with the grid at a loss, so such a trade
could only make the home pay more than without the market.

A chunk the grid would pay as much for (bought at or below the export price, sold at or above
the import price) is left out; the owner's limits bound the rest (never buy above
``max_buy_price``, never sell below ``min_sell_price``), and equal neighbours merge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, NamedTuple

from gateway.ems import Preferences
from gateway.plan.model import FloatArray, Model
from gateway.plan.problem import Problem
from gateway.plan.solve import SolveFailed, Solver
from protocols.messages import Step

MAX_STEPS = 8
"""Steps per side of a curve (the bid curves of issue 16 carry up to eight)."""
DELIVERY_RISK = 0.25
"""Of a chunk the cells move for a trade, the share that may go undelivered: the interval's sun
and load differ from the forecast and the cells cannot take up the difference (full, or at the
reserve), or the dispatch spends the interval's first control period catching up. A Wh bought
and not taken goes out at the step's export price, a Wh sold and not delivered is bought at its
import price; the heuristic plans on the same share (``gateway.ems._MARKET_POWER_SHARE``)."""
_FLAT = 0.5
"""µ/Wh: a chunk whose chord lies less than this (per Wh of the chunk) above its tangents is
priced within rounding by its average: it is not split."""
_ROUNDING = 1e-6
"""µ/Wh: re-solves differ from the exact value by float noise (about 1e-12 of the day's cost per
Wh), so a chunk's value is taken as the whole µ or the grid price it lies this close to."""


@dataclass(frozen=True, slots=True)
class BidCurve:
    """What the home offers for one interval: ``sell`` at ascending prices (its cheapest energy
    first), ``buy`` at descending prices (its most needed energy first), at most ``MAX_STEPS``
    each. Either side may be empty."""

    sell: tuple[Step, ...] = ()
    buy: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        for side, steps, sign in (("sell", self.sell, 1), ("buy", self.buy, -1)):
            if len(steps) > MAX_STEPS:
                raise ValueError(f"{side}: {len(steps)} steps, at most {MAX_STEPS}")
            if any(s.wh <= 0 for s in steps):
                raise ValueError(f"{side}: every step needs energy > 0")
            if any(sign * (b.price - a.price) <= 0 for a, b in pairwise(steps)):
                raise ValueError(f"{side}: prices must be strictly "
                                 f"{'ascending' if sign > 0 else 'descending'}")


class _Point(NamedTuple):
    at: int
    cost: float
    slope: float


def bid_curve(solver: Solver, model: Model, problem: Problem, *, max_buy_wh: int,
              max_sell_wh: int, time_limit_s: float, max_steps: int = MAX_STEPS) -> BidCurve:
    """The curve for the problem's first step, from ``solver`` holding ``model`` solved.

    ``max_buy_wh``/``max_sell_wh`` bound each side (the member's limits for the interval).
    The re-solves share ``time_limit_s`` of the solver's clock; when it runs out the curve has
    the chunks found so far. Raises ``SolveFailed`` when not even a side's ends were solved.
    """
    if not 1 <= max_steps <= MAX_STEPS:
        raise ValueError(f"max_steps must be 1..{MAX_STEPS}")
    col = int(model.columns.market[0])
    planned = solver.values()
    for load in _first_loads(model):
        solver.bound(load, float(planned[load]), float(planned[load]))
    solver.set_cost(col, 0.0)
    end = solver.clock() + time_limit_s

    def cost_at(q: int) -> tuple[float, float]:
        solver.bound(col, float(q), float(q))
        solver.run(time_limit_s=end - solver.clock())
        return solver.objective(), solver.col_dual(col)

    zero_cost, zero_slope = cost_at(0)
    buy_top, sell_top = _reach(model, planned)
    sides = {}
    for side, sign, top in (("buy", 1, min(max_buy_wh, buy_top)),
                            ("sell", -1, min(max_sell_wh, sell_top))):
        points = [_Point(0, zero_cost, sign * zero_slope)]
        if top > 0:
            end_cost, end_slope = cost_at(sign * top)
            points.append(_Point(top, end_cost, sign * end_slope))
            _refine(points, sign, cost_at, max_steps)
        sides[side] = _prune(points)
    prefs, first = problem.prefs, (problem.import_price[0], problem.export_price[0])
    return BidCurve(sell=_steps(sides["sell"], "sell", prefs, first),
                    buy=_steps(sides["buy"], "buy", prefs, first))


def _first_loads(model: Model) -> list[int]:
    """The columns of the first step's loads: each deferrable job's run, the car's charge and
    feed (those the model has)."""
    cols = model.columns
    return [c for c in (cols.ev_charge[0], cols.ev_discharge[0],
                        *(idx[0] for idx in cols.jobs.values())) if c >= 0]


def _reach(model: Model, planned: FloatArray) -> tuple[int, int]:
    """The most the first step could physically take (buy side) and give (sell side), its loads
    at the plan's runs (``planned``, the day's solution): beyond it a trade is only a position
    the grid settles at its own prices."""
    cols, upper = model.columns, model.upper
    load = float(model.row_lower[model.balance_rows[0]])
    pv = float(upper[cols.pv[0]])
    runs = sum(float(planned[c]) for c in _first_loads(model) if c != cols.ev_discharge[0])
    fed = float(planned[cols.ev_discharge[0]]) if cols.ev_discharge[0] >= 0 else 0.0
    charge = float(upper[cols.charge[0]]) if cols.charge[0] >= 0 else 0.0
    discharge = float(upper[cols.discharge[0]]) if cols.discharge[0] >= 0 else 0.0
    return math.floor(load + pv + runs + charge), math.floor(pv + fed + discharge)


def _refine(points: list[_Point], sign: int, cost_at: Callable[[int], tuple[float, float]],
            max_steps: int) -> None:
    """Split chunks at their tangents' crossing, the worst first, up to ``max_steps`` chunks."""
    while len(points) <= max_steps:
        worst, at, gap = -1, 0, 0.0
        for i, (a, b) in enumerate(pairwise(points)):
            if b.slope - a.slope < _FLAT or b.at - a.at < 2:
                continue
            cross = (b.cost - a.cost + a.slope * a.at - b.slope * b.at) / (a.slope - b.slope)
            if not a.at + 1 <= cross <= b.at - 1:
                continue  # the kink is within a Wh of an end: whole Wh cannot isolate it
            split = round(cross)
            chord = a.cost + (b.cost - a.cost) * (split - a.at) / (b.at - a.at)
            below = chord - max(a.cost + a.slope * (split - a.at),
                                b.cost + b.slope * (split - b.at))
            if below > max(gap, _FLAT * (b.at - a.at)):
                worst, at, gap = i, split, below
        if worst < 0:
            return
        try:
            cost, slope = cost_at(sign * at)
        except SolveFailed:
            return  # out of time: the chunks so far are exact, only coarser
        points.insert(worst + 1, _Point(at, cost, sign * slope))


def _prune(points: list[_Point]) -> list[_Point]:
    """Drop a point that lies on the chord of its neighbours within ``_FLAT`` per Wh: a split
    placed before a later one showed the chunk is linear (a kink between two whole Wh, say)."""
    kept = list(points)
    i = 1
    while i < len(kept) - 1:
        a, p, b = kept[i - 1], kept[i], kept[i + 1]
        chord = a.cost + (b.cost - a.cost) * (p.at - a.at) / (b.at - a.at)
        if chord - p.cost < _FLAT * (b.at - a.at):
            del kept[i]
            i = max(1, i - 1)
        else:
            i += 1
    return kept


def _steps(points: list[_Point], side: Literal["buy", "sell"], prefs: Preferences,
           first: tuple[int, int]) -> tuple[Step, ...]:
    """Chunks between consecutive points, priced at their value (rounded in the home's favour)
    or, where the cells move them, at their value with ``DELIVERY_RISK`` of them settled with the
    grid (:func:`at_risk`), cut where the grid pays as much, bounded by the owner's limits,
    equal neighbours merged."""
    import_price, export_price = first
    steps: list[Step] = []
    for a, b in pairwise(points):
        per_wh = (b.cost - a.cost) / (b.at - a.at)
        if side == "buy":
            value = at_risk(-per_wh, "buy", import_price=import_price,
                            export_price=export_price)
            price = min(math.floor(value + _ROUNDING), prefs.max_buy_price)
            if price <= export_price:
                break
        else:
            value = at_risk(per_wh, "sell", import_price=import_price,
                            export_price=export_price)
            price = max(math.ceil(value - _ROUNDING), prefs.min_sell_price)
            if price >= import_price:
                break
        if steps and (price >= steps[-1].price if side == "buy" else price <= steps[-1].price):
            steps[-1] = Step(steps[-1].wh + b.at - a.at, steps[-1].price)
        else:
            steps.append(Step(b.at - a.at, price))
    return tuple(steps)


def at_risk(value: float, side: Literal["buy", "sell"], *, import_price: int,
            export_price: int) -> float:
    """What a Wh worth ``value`` to the home's day is worth to it traded on ``side`` when the
    cells move it (a value between the step's export and import prices): ``1 − DELIVERY_RISK``
    of it delivered at its value, the rest settled with the grid, a bought Wh out at the export
    price, a sold Wh in at the import price. A value at or beyond the grid's prices is the
    grid's own now (a deficit it would fill, a surplus it would take) and is kept as it is; so
    is a value within rounding of a grid price (a re-solve's 22.999999999998 for an import price
    of 23 is the grid's price, not a Wh the cells move)."""
    if not export_price + _ROUNDING < value < import_price - _ROUNDING:
        return value
    lost = export_price if side == "buy" else import_price
    return value + DELIVERY_RISK * (lost - value)
