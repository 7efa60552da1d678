"""Inner scheduling: cover the home first, offer only the residual.

The market only ever sees what the home cannot sensibly do for itself. Before each interval the EMS
forecasts PV and load for it, takes the energy the controllable loads run in it (EV charging,
deferrable appliances: ``gateway/flex_plan.py`` shifts them), plans the battery (self-consumption
within its SoC and power limits, keeping the owner's reserve) and turns what is left into one bid:
a sell offer for a surplus, a buy bid for a deficit, priced from the owner's preferences between
the feed-in and retail tariffs.

The shifted loads take the surplus before the battery does (a load that has to run anyway stores
energy without the battery's losses), and the battery covers only the base load's deficit: a load
the plan runs from the grid is bought, not drained from the battery at a loss.

Pure: readings and forecasts in, a plan out. The asyncio side (gateway/app.py) feeds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from protocols.clearing import Tariffs

Side = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class BatteryState:
    """What the plan needs to know about the battery, from the latest fresh reading."""

    capacity_wh: int
    soc_pct: float
    max_charge_w: int
    max_discharge_w: int
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95


@dataclass(frozen=True, slots=True)
class Preferences:
    """The owner's limits. Prices in µ/Wh; they are clamped into [feed-in, retail]."""

    min_sell_price: int
    max_buy_price: int
    reserve_pct: float = 20.0
    soc_max_pct: float = 95.0
    min_bid_wh: int = 1
    ev_ready_by_min: int | None = None
    """Minute of the day the car must be charged by (the owner's ready-by), None: its departure."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One interval's plan: battery energy at its terminals and the residual offered to the market.

    ``battery_wh`` is + for charging, − for discharging. ``residual_wh`` is what is left at the
    meter after the shifted loads and the battery: + surplus (sell), − deficit (buy), 0 nothing
    to trade. ``flex`` is the energy each controllable load runs in the interval, by device name.
    """

    pv_wh: int
    load_wh: int
    battery_wh: int
    residual_wh: int
    side: Side | None
    energy_wh: int
    limit_price: int
    flex: tuple[tuple[str, int], ...] = ()

    @property
    def flex_wh(self) -> int:
        """Energy of every controllable load together in the interval."""
        return sum(wh for _, wh in self.flex)

    def battery_power_w(self, interval_s: float) -> int:
        """Battery power that delivers ``battery_wh`` over ``interval_s`` (+ charge)."""
        return round(self.battery_wh * 3600 / interval_s)


def plan_interval(
    *,
    pv_wh: int,
    load_wh: int,
    battery: BatteryState | None,
    prefs: Preferences,
    tariffs: Tariffs,
    interval_s: float,
    flex: Mapping[str, int] | None = None,
) -> Plan:
    """Plan one interval: battery covers the home's own deficit or stores its own surplus first.

    ``flex`` is the energy each controllable load runs in the interval (``plan_flex``); it is
    load the battery stores surplus after, and does not cover. Charging stops at
    ``soc_max_pct`` and discharging at the reserve; both are limited by the battery's power over
    the interval. Efficiency losses are charged to the battery's side so the residual at the
    meter is what the home really exports or imports.
    """
    runs = tuple(sorted((flex or {}).items()))
    if pv_wh < 0 or load_wh < 0 or any(wh < 0 for _, wh in runs):
        raise ValueError(f"forecasts and flexible loads must be non-negative (pv_wh={pv_wh}, "
                         f"load_wh={load_wh}, flex={dict(runs)})")
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    flex_wh = sum(wh for _, wh in runs)
    net = pv_wh - load_wh - flex_wh  # + surplus at the meter before the battery
    base_deficit = max(0, load_wh - pv_wh)  # what the battery may cover
    battery_wh = 0
    if battery is not None and battery.capacity_wh > 0:
        hours = interval_s / 3600
        if net > 0:
            headroom = (prefs.soc_max_pct - battery.soc_pct) / 100 * battery.capacity_wh
            by_room = max(0.0, headroom) / battery.charge_efficiency
            battery_wh = math.floor(min(net, battery.max_charge_w * hours, by_room))
        elif net < 0:
            stored = (battery.soc_pct - prefs.reserve_pct) / 100 * battery.capacity_wh
            by_energy = max(0.0, stored) * battery.discharge_efficiency
            battery_wh = -math.floor(min(-net, base_deficit, battery.max_discharge_w * hours,
                                         by_energy))
    residual = net - battery_wh
    side: Side | None = None
    energy = 0
    price = 0
    if residual >= prefs.min_bid_wh:
        side, energy = "sell", residual
        price = _clamp(prefs.min_sell_price, tariffs)
    elif -residual >= prefs.min_bid_wh:
        side, energy = "buy", -residual
        price = _clamp(prefs.max_buy_price, tariffs)
    return Plan(
        pv_wh=pv_wh,
        load_wh=load_wh,
        battery_wh=battery_wh,
        residual_wh=residual,
        side=side,
        energy_wh=energy,
        limit_price=price,
        flex=runs,
    )


def _clamp(price: int, tariffs: Tariffs) -> int:
    """Nobody sells below feed-in (the grid pays that) or buys above retail (the grid's price)."""
    return min(max(price, tariffs.feed_in_price), tariffs.retail_price)
