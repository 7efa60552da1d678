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

Deterministic and cheap for a Pi: two passes over at most ``MAX_BLOCKS`` blocks per plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # ems imports this module: the types only, never at runtime
    from gateway.ems import BatteryState, Preferences

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


def _bought_wh(battery: BatteryState, prefs: Preferences, stored_wh: float, ahead: Ahead) -> float:
    """What the home buys over ``ahead`` under self-consumption from ``stored_wh`` above the
    reserve: the deficit the battery does not cover, for want of energy or of power."""
    room = max(0.0, (prefs.soc_max_pct - prefs.reserve_pct) / 100 * battery.capacity_wh)
    hours = ahead.block_s / 3600
    stored = min(stored_wh, room)
    bought = 0.0
    for pv_wh, load_wh in ahead.blocks:
        net = pv_wh - load_wh
        if net >= 0:
            charged = min(net, battery.max_charge_w * hours) * battery.charge_efficiency
            stored = min(room, stored + charged)
        else:
            out = min(-net, battery.max_discharge_w * hours,
                      stored * battery.discharge_efficiency)
            stored -= out / battery.discharge_efficiency
            bought += -net - out
    return bought
