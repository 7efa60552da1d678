"""The look-ahead: how much more energy in the battery now the home would use later.

Self-consumption one interval at a time (store the surplus, cover the deficit) is right as long as
the battery holds enough for the hours ahead. When the forecast shows an evening the battery
cannot cover, every Wh it still holds then saves a Wh bought at retail: draining it on a small
midday deficit, or leaving it half empty while the neighbours sell their surplus cheaply, costs
money. The plan (``gateway/ems.py``) needs one figure to decide: of up to ``extra_wh`` more
energy in the battery at the end of the interval, how much would all reach the home later, in
place of energy it would otherwise buy.

That figure comes from simulating self-consumption over the forecast blocks ahead twice, from the
plan's end state and from that state plus the extra, and comparing what the home buys. Shifting
the battery's path up by x loses the excess wherever the battery would be full anyway (the extra
displaces surplus, which is exported instead) and gives it out wherever the battery would hit
the reserve (the shortfall shrinks), so the energy saved is min(x, U) times the discharge
efficiency: the difference of the two runs gives U, and any amount up to U is used in full.

The sell side asks the mirror question (:func:`removal_cost`): what the home loses over the day
ahead when the battery ends the interval with x fewer Wh. Money, not energy: the two runs are
compared on what the home pays the grid (imports at retail, exports at feed-in) plus, for
energy the shifted run still lacks at the horizon's end, retail for each Wh it would have
delivered, since the day after may need it. Energy the day's surplus refills (the battery
fills up in both runs) costs only the exports it displaces: feed-in per Wh charged.

Deterministic and cheap for a Pi: two passes over at most ``MAX_BLOCKS`` blocks per figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # ems imports this module: the types only, never at runtime
    from gateway.ems import BatteryState, Preferences
    from protocols.clearing import Tariffs

HORIZON_S = 86_400
"""One day: the forecast is a time-of-day profile, so further ahead repeats what it already saw."""
MAX_BLOCKS = 96
"""Blocks of the horizon at most; shorter intervals are looked ahead in blocks of a quarter hour."""


@dataclass(frozen=True, slots=True)
class Ahead:
    """The forecast after the interval being planned: (pv_wh, load_wh) for consecutive blocks of
    ``block_s`` from the interval's end, over the times of day the forecaster has learned."""

    block_s: float
    blocks: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.block_s <= 0:
            raise ValueError(f"block_s must be positive, got {self.block_s}")
        if len(self.blocks) > MAX_BLOCKS:
            raise ValueError(f"{len(self.blocks)} blocks ahead, at most {MAX_BLOCKS}")
        if any(pv < 0 or load < 0 for pv, load in self.blocks):
            raise ValueError("forecast blocks ahead must be non-negative")

    def with_sun(self, share: float) -> Ahead:
        """The same blocks with ``share`` of their PV (a cloudier day than the profile's)."""
        return Ahead(block_s=self.block_s,
                     blocks=tuple((round(pv * share), load) for pv, load in self.blocks))


def horizon(interval_s: float) -> tuple[float, int]:
    """(block_s, count): the blocks the look-ahead forecasts for an interval of ``interval_s``."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    block_s = max(interval_s, HORIZON_S / MAX_BLOCKS)
    return block_s, int(HORIZON_S // block_s)


def useful_storage_wh(
    *, battery: BatteryState, prefs: Preferences, stored_wh: float, extra_wh: float,
    ahead: Ahead,
) -> float:
    """Of up to ``extra_wh`` more in the cells at the end of the interval, how much the home
    would draw later to cover deficits it would otherwise buy (cell Wh, 0 .. ``extra_wh``).

    ``stored_wh`` is what the plan leaves in the cells above the owner's reserve (negative below
    it). Energy below the reserve is never drawn, so the extra first fills the reserve and the
    result counts that part too when the energy above it would be used.
    """
    if extra_wh <= 0 or not ahead.blocks or battery.capacity_wh <= 0:
        return 0.0
    saved = (_bought_wh(battery, prefs, max(0.0, stored_wh), ahead)
             - _bought_wh(battery, prefs, max(0.0, stored_wh + extra_wh), ahead))
    if saved <= 0:
        return 0.0
    return min(extra_wh, max(0.0, -stored_wh) + saved / battery.discharge_efficiency)


def removal_cost(
    *, battery: BatteryState, prefs: Preferences, tariffs: Tariffs, stored_wh: float,
    removed_wh: float, ahead: Ahead,
) -> float:
    """What the home loses over ``ahead`` (µ) when the cells end the interval ``removed_wh``
    lower than ``stored_wh`` above the reserve (both cell Wh), under self-consumption.

    The grid bill of the two runs (imports at retail, exports at feed-in) differs by what the
    lower one buys more and exports less; where the lower run has not caught up by the end of
    the horizon, each cell Wh it still lacks is counted at what it would deliver at retail.
    So a cell Wh costs feed-in / charge efficiency when the day's surplus refills it (at
    least that: the cheapest way to replace it) and retail x discharge efficiency when the
    home would otherwise use it (at most that).
    """
    if removed_wh <= 0 or battery.capacity_wh <= 0:
        return 0.0
    high = _run(battery, prefs, max(0.0, stored_wh), ahead)
    return _lost(battery, prefs, tariffs, high, max(0.0, stored_wh - removed_wh), ahead)


def refilled_wh(
    *, battery: BatteryState, prefs: Preferences, tariffs: Tariffs, stored_wh: float,
    most_wh: float, ahead: Ahead,
) -> float:
    """The most cell Wh (0 .. ``most_wh``) the cells may end the interval lower by and cost the
    home only the exports that refill them (:func:`removal_cost` at its floor, feed-in / charge
    efficiency per Wh): energy the day ahead neither needs nor fails to replace.

    Every Wh of that amount costs the floor, so it is one number: found by bisection to a
    tenth of a Wh, rounded down.
    """
    if most_wh <= 0 or battery.capacity_wh <= 0:
        return 0.0
    floor = tariffs.feed_in_price / battery.charge_efficiency
    high = _run(battery, prefs, max(0.0, stored_wh), ahead)

    def refilled(x: float) -> bool:
        cost = _lost(battery, prefs, tariffs, high, max(0.0, stored_wh - x), ahead)
        return cost <= floor * x + _COST_SLACK * (1 + x)

    if refilled(most_wh):
        return most_wh
    low, top = 0.0, most_wh
    while top - low > 0.1:
        mid = (low + top) / 2
        if refilled(mid):
            low = mid
        else:
            top = mid
    return low


_COST_SLACK = 1e-6
"""µ per Wh: what float rounding may put on a cost that is exactly the floor."""


@dataclass(frozen=True, slots=True)
class _Day:
    bought_wh: float
    exported_wh: float
    end_wh: float
    """Stored above the reserve after the last block."""


def _lost(battery: BatteryState, prefs: Preferences, tariffs: Tariffs, high: _Day,
          lower_wh: float, ahead: Ahead) -> float:
    """:func:`removal_cost` against the run ``high``, from ``lower_wh`` above the reserve."""
    low = _run(battery, prefs, lower_wh, ahead)
    short = max(0.0, high.end_wh - low.end_wh)
    return ((low.bought_wh - high.bought_wh) * tariffs.retail_price
            + (high.exported_wh - low.exported_wh) * tariffs.feed_in_price
            + short * battery.discharge_efficiency * tariffs.retail_price)


def _bought_wh(battery: BatteryState, prefs: Preferences, stored_wh: float, ahead: Ahead) -> float:
    """What the home buys over ``ahead`` under self-consumption from ``stored_wh`` above the
    reserve: the deficit the battery does not cover, for want of energy or of power."""
    return _run(battery, prefs, stored_wh, ahead).bought_wh


def _run(battery: BatteryState, prefs: Preferences, stored_wh: float, ahead: Ahead) -> _Day:
    """Self-consumption over ``ahead`` from ``stored_wh`` above the reserve: what the home buys
    (deficit the battery does not cover, for want of energy or of power), what it exports
    (surplus the battery does not take, for want of room or of power) and what is left."""
    room = max(0.0, (prefs.soc_max_pct - prefs.reserve_pct) / 100 * battery.capacity_wh)
    hours = ahead.block_s / 3600
    eta_c, eta_d = battery.charge_efficiency, battery.discharge_efficiency
    stored = min(stored_wh, room)
    bought = exported = 0.0
    for pv_wh, load_wh in ahead.blocks:
        net = pv_wh - load_wh
        if net >= 0:
            taken = min(net, battery.max_charge_w * hours, (room - stored) / eta_c)
            stored = min(room, stored + taken * eta_c)
            exported += net - taken
        else:
            out = min(-net, battery.max_discharge_w * hours, stored * eta_d)
            stored -= out / eta_d
            bought += -net - out
    return _Day(bought_wh=bought, exported_wh=exported, end_wh=stored)
