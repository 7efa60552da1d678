"""The gateway's side of the plan: the day's ``Problem`` from what the trader knows when it bids,
and the planner's ``Outcome`` as the ``ems.Plan`` the trader bids and the controllers follow.

The horizon is a day at the market's interval, at most ``MAX_BLOCKS`` steps (a shorter interval
looks ahead 96 of its own steps, not a day): one step per interval keeps the plan's first step
the interval being bid for, whatever its length. It is as long as the forecaster has learned
the day (``HomeForecaster.learned_ahead``); a home that has seen nothing yet plans the interval
alone. A horizon cut short that way values what the cells hold at its end at the import price
(after the discharge loss), as the heuristic counts the end of its look-ahead: nothing the plan
knows says the energy will not be needed later, and energy sold below that would be bought back
(the programme's default, the export price, is for a day it has seen). For the same reason a
deferrable load's energy owed after the horizon is priced at the import price: a load runs on
a surplus now, as the heuristic runs it, rather than waiting for an evening it cannot see.

The bid is one side of the plan's curve: the side of the planned residual (a surplus is
offered, a deficit bid for), and, when the plan leaves nothing at the meter, the side it would
trade on at a price (selling first: a seller's curve starts above what its energy is worth to
it). Its steps are the curve's, best first, as :class:`protocols.messages.Bid` carries them.
The dispatch follows the cleared position, so a step cleared beyond the residual is delivered
from (or into) the battery, as the plan priced it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from statistics import fmean

from gateway.ems import BatteryState, Plan, Preferences
from gateway.flex_plan import DAY_S, FlexJob
from gateway.lookahead import MAX_BLOCKS
from gateway.plan.grid_limits import GridLimits
from gateway.plan.planner import Outcome
from gateway.plan.problem import Problem, Vehicle
from gateway.plan.tariff_schedule import TariffSchedule


def horizon_steps(interval_s: float) -> int:
    """Steps the plan looks at for an interval of ``interval_s``: a day, at most MAX_BLOCKS."""
    if not interval_s > 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    return max(1, min(MAX_BLOCKS, int(DAY_S // interval_s)))


def day_problem(
    *, start_ms: int, step_s: float, first: tuple[int, int],
    ahead: Sequence[tuple[int, int]], battery: BatteryState | None, prefs: Preferences,
    jobs: Iterable[FlexJob], schedule: TariffSchedule, limits: GridLimits | None,
    vehicle: Vehicle | None = None,
) -> Problem:
    """The day from ``start_ms``: ``first`` (pv_wh, load_wh) is the interval bid for, ``ahead``
    the learned steps after it; prices from ``schedule``, the operator's ``limits`` per step;
    ``vehicle`` the car at a charger that reports its pack (else it is one of ``jobs``)."""
    blocks = (first, *ahead)
    steps = len(blocks)
    imports, exports = schedule.steps(start_ms, round(step_s * 1000), steps)
    grid = None if limits is None else limits.caps(start_ms=start_ms, step_s=step_s,
                                                    steps=steps)
    end_value = end_value_above = None
    later_price = 0.0
    if steps < horizon_steps(step_s):
        later_price = max(0.0, fmean(imports))
        if battery is not None:
            end_value = later_price * battery.discharge_efficiency
            end_value_above = max(0.0, fmean(exports)) * battery.discharge_efficiency
    return Problem(step_s=step_s, pv_wh=tuple(max(0, pv) for pv, _ in blocks),
                   load_wh=tuple(max(0, load) for _, load in blocks), import_price=imports,
                   export_price=exports, prefs=prefs, battery=battery, jobs=tuple(jobs),
                   vehicle=vehicle,
                   grid=grid, end_value=end_value, end_value_above=end_value_above,
                   later_price=later_price)


def bid_plan(outcome: Outcome, *, min_bid_wh: int) -> Plan:
    """The interval's plan with the curve's side the trader bids (see the module docstring)."""
    plan, curve = outcome.interval, outcome.curve
    if outcome.source == "heuristic":
        return plan  # its bid is its own curve already
    residual = plan.residual_wh
    side: str | None
    if residual > 0:
        side = "sell"
    elif residual < 0:
        side = "buy"
    else:
        side = "sell" if curve.sell else "buy" if curve.buy else None
    offered = curve.sell if side == "sell" else curve.buy if side == "buy" else ()
    energy = sum(s.wh for s in offered)
    if side is None or energy < max(1, min_bid_wh):
        return replace(plan, side=None, energy_wh=0, limit_price=0, steps=())
    steps = tuple(offered)
    return replace(plan, side="sell" if side == "sell" else "buy", energy_wh=energy,
                   limit_price=steps[0].price, steps=steps if len(steps) > 1 else ())
